/** The LayerNorm → Linear → GELU → Linear → masked cross-entropy chain against PyTorch (fixture). */
import { backward } from "../core/autograd.ts";
import { add } from "../core/ops/elementwise.ts";
import { crossEntropy } from "../core/ops/cross_entropy.ts";
import { gelu } from "../core/ops/gelu.ts";
import { layerNorm } from "../core/ops/layernorm.ts";
import { matmul } from "../core/ops/matmul.ts";
import { fromArray, type Tensor, tidy } from "../core/tensor.ts";
import { assertClose, gpuTest, param } from "./helpers.ts";

interface Fixture {
  inputs: Record<string, { shape: number[]; data: number[] }>;
  targets: number[];
  mask: number[];
  logits: number[];
  loss: number;
  grads: Record<string, number[]>;
}

const fixture: Fixture = JSON.parse(
  await Deno.readTextFile(new URL("./fixtures/chain.json", import.meta.url)),
);

gpuTest(
  "the LayerNorm→Linear→GELU→Linear→masked cross-entropy chain matches PyTorch: values and every gradient",
  async (gpu) => {
    const p: Record<string, Tensor> = {};
    for (const [name, { shape, data }] of Object.entries(fixture.inputs)) {
      p[name] = param(gpu, data, shape, name);
    }
    const targets = fromArray(gpu, fixture.targets, [fixture.targets.length], { dtype: "u32" });
    const mask = fromArray(gpu, fixture.mask, [fixture.mask.length]);
    const { loss, logits } = tidy(() => {
      const h = layerNorm(p.x, p.ln_g, p.ln_b);
      const a = gelu(add(matmul(h, p.w1), p.b1));
      const logits = add(matmul(a, p.w2), p.b2);
      return { loss: crossEntropy(logits, targets, mask), logits };
    });
    assertClose(await logits.download(), fixture.logits, { rtol: 1e-4, atol: 1e-6, what: "logits" });
    assertClose(await loss.download(), [fixture.loss], { rtol: 1e-4, atol: 0, what: "loss" });
    backward(loss);
    for (const [name, expected] of Object.entries(fixture.grads)) {
      assertClose(await p[name].grad!.download(), expected, { rtol: 1e-4, atol: 1e-6, what: `grad ${name}` });
    }
    for (const t of [...Object.values(p), targets, mask, loss, logits]) t.dispose();
  },
);
