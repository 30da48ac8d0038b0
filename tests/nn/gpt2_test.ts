/** The whole model against PyTorch (tests/reference/gpt2.py), as llm.c's test_gpt2 does. */
import { equal } from "node:assert/strict";
import { backward } from "../../core/autograd.ts";
import { loadGPT2 } from "../../core/io/hf.ts";
import { AdamW } from "../../core/optim/adamw.ts";
import { tidy } from "../../core/tensor.ts";
import { assertClose, gpuTest, KERNEL_FAMILIES } from "../helpers.ts";

interface Expected {
  batch: { ids: number[]; targets: number[]; batchSize: number; blockSize: number };
  logits: number[];
  loss: number;
  grads: Record<string, number[]>;
  adamw: { lr: number; betas: [number, number]; eps: number; weightDecay: number; losses: number[] };
}
const dir = new URL("../fixtures/gpt2_tiny/", import.meta.url).pathname;
const expected: Expected = JSON.parse(await Deno.readTextFile(`${dir}expected.json`));
const input = {
  ids: Uint32Array.from(expected.batch.ids),
  targets: Uint32Array.from(expected.batch.targets),
  batchSize: expected.batch.batchSize,
  blockSize: expected.batch.blockSize,
};

for (const kernels of KERNEL_FAMILIES) {
  for (const style of ["bare", "transformer"] as const) {
    for (const fused of [true, false]) {
      gpuTest(
        `GPT-2 (${style} keys, ${
          fused ? "fused" : "non-fused"
        } attention, ${kernels} kernels): logits, loss and every gradient match PyTorch`,
        async (gpu) => {
          const { model, keyStyle } = await loadGPT2(gpu, `${dir}${style}`);
          equal(keyStyle, style);
          model.setFusedAttention(fused);
          const logits = tidy(() => model.logits(input));
          assertClose(await logits.download(), expected.logits, { rtol: 1e-4, atol: 1e-5, what: "logits" });
          logits.dispose();
          const loss = tidy(() => model.loss(input));
          assertClose(await loss.download(), [expected.loss], { rtol: 1e-5, atol: 0, what: "loss" });
          backward(loss);
          const params = model.namedParameters();
          equal(params.length, Object.keys(expected.grads).length);
          for (const [name, p] of params) {
            assertClose(await p.grad!.download(), expected.grads[name], {
              rtol: 1e-4,
              atol: 1e-6,
              what: `grad ${name}`,
            });
          }
          loss.dispose();
          model.dispose();
        },
        { kernels },
      );
    }
  }
}

for (const kernels of KERNEL_FAMILIES) {
  gpuTest(`GPT-2: 5 AdamW steps give PyTorch's losses (${kernels} kernels)`, async (gpu) => {
    const { model } = await loadGPT2(gpu, `${dir}bare`);
    const { lr, betas, eps, weightDecay, losses } = expected.adamw;
    const opt = new AdamW(gpu, { betas, eps, weightDecay });
    const params = model.namedParameters();
    const got: number[] = [];
    for (let step = 0; step < losses.length; step++) {
      const loss = tidy(() => model.loss(input));
      backward(loss);
      opt.step(params, lr);
      for (const [, p] of params) p.zeroGrad();
      got.push((await loss.download())[0]);
      loss.dispose();
    }
    assertClose(got, losses, { rtol: 1e-4, atol: 0, what: "AdamW losses" });
    opt.dispose();
    model.dispose();
  }, { kernels });
}
