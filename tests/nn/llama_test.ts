/**
 * LLaMA against PyTorch (tests/reference/llama.py, transformers' modeling_llama by hand): logits,
 * loss, every gradient and 5 AdamW steps, for grouped-query attention with an untied head (F32, one
 * file) and for a tied head with BF16 weights in two shards; both kernel families, fused and not.
 */
import { equal, ok } from "node:assert/strict";
import { backward } from "../../core/autograd.ts";
import { loadModel } from "../../core/io/models.ts";
import { Llama } from "../../core/nn/llama.ts";
import { AdamW } from "../../core/optim/adamw.ts";
import { tidy } from "../../core/tensor.ts";
import { assertClose, gpuTest, KERNEL_FAMILIES } from "../helpers.ts";

interface Expected {
  batch: { ids: number[]; targets: number[]; mask: number[]; batchSize: number; blockSize: number };
  config: { tied: boolean; numKvHeads: number; numHeads: number };
  logits: number[];
  loss: number;
  grads: Record<string, number[]>;
  adamw: { lr: number; betas: [number, number]; eps: number; weightDecay: number; losses: number[] };
}

const root = new URL("../fixtures/llama_tiny/", import.meta.url).pathname;
const cases = await Promise.all(["gqa", "tied_bf16"].map(async (name) => {
  const expected: Expected = JSON.parse(await Deno.readTextFile(`${root}${name}/expected.json`));
  const b = expected.batch;
  const input = {
    ids: Uint32Array.from(b.ids),
    targets: Uint32Array.from(b.targets),
    mask: Float32Array.from(b.mask),
    batchSize: b.batchSize,
    blockSize: b.blockSize,
  };
  return { name, dir: `${root}${name}`, expected, input };
}));

for (const kernels of KERNEL_FAMILIES) {
  for (const { name, dir, expected, input } of cases) {
    for (const fused of [true, false]) {
      gpuTest(
        `LLaMA ${name} (${
          fused ? "fused" : "non-fused"
        } attention, ${kernels} kernels): logits, loss and every gradient match PyTorch`,
        async (gpu) => {
          const { model, source } = await loadModel(gpu, dir);
          ok(model instanceof Llama);
          equal(source.modelType, "llama");
          equal(source.sharded, name === "tied_bf16");
          equal(model.lm_head === null, expected.config.tied);
          equal(model.config.nKvHead, expected.config.numKvHeads);
          model.setFusedAttention(fused);
          const logits = tidy(() => model.logits(input));
          assertClose(await logits.download(), expected.logits, { rtol: 1e-4, atol: 1e-5, what: "logits" });
          logits.dispose();
          const loss = tidy(() => model.loss(input));
          assertClose(await loss.download(), [expected.loss], { rtol: 1e-5, atol: 0, what: "loss" });
          backward(loss);
          const params = model.namedParameters();
          equal(params.map(([n]) => n).join(), Object.keys(expected.grads).join());
          for (const [pname, p] of params) {
            assertClose(await p.grad!.download(), expected.grads[pname], {
              rtol: 1e-4,
              atol: 1e-6,
              what: `grad ${pname}`,
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
  for (const { name, dir, expected, input } of cases) {
    gpuTest(`LLaMA ${name}: 5 AdamW steps give PyTorch's losses (${kernels} kernels)`, async (gpu) => {
      const { model } = await loadModel(gpu, dir);
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
}
