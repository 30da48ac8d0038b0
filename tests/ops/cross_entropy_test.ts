import { equal, ok, throws } from "node:assert/strict";
import { backward } from "../../core/autograd.ts";
import type { Gpu } from "../../core/gpu.ts";
import { crossEntropy } from "../../core/ops/cross_entropy.ts";
import { fromArray } from "../../core/tensor.ts";
import { crossEntropyGradRef, crossEntropyRef } from "../reference/cpu.ts";
import { assertClose, checkOp, gpuTest, kernelVariants, param, rng } from "../helpers.ts";

const targets = [3, 0, 4, 1, 2, 4];

gpuTest("masked cross-entropy matches the reference; masked rows get no gradient", async (gpu) => {
  const v = 5;
  const mask = [1, 0, 1, 1, 0, 1];
  const t = fromArray(gpu, targets, [6], { dtype: "u32" });
  const m = fromArray(gpu, mask, [6]);
  await checkOp(gpu, {
    shapes: [[2, 3, v]],
    run: ([x]) => crossEntropy(x, t, m),
    reference: ([x]) => Float64Array.of(crossEntropyRef(x, targets, mask, v)),
  });
  t.dispose();
  m.dispose();
});

gpuTest(
  "masked cross-entropy over a vocabulary divisible by 4 (vec4 rows) matches the reference",
  async (gpu) => {
    const v = 8;
    const mask = [1, 1, 0, 1, 0, 1];
    const tg = [7, 0, 4, 1, 2, 5];
    const t = fromArray(gpu, tg, [6], { dtype: "u32" });
    const m = fromArray(gpu, mask, [6]);
    await checkOp(gpu, {
      shapes: [[6, v]],
      run: ([x]) => crossEntropy(x, t, m),
      reference: ([x]) => Float64Array.of(crossEntropyRef(x, tg, mask, v)),
    });
    t.dispose();
    m.dispose();
  },
);

gpuTest(
  "cross-entropy over big logits (texture reads on software adapters) matches the reference",
  async (gpu) => {
    const [rows, v] = [40, 512];
    const tg = Array.from({ length: rows }, (_, i) => (i * 37) % v);
    const mask = Array.from({ length: rows }, (_, i) => (i % 5 === 0 ? 0 : 1));
    const t = fromArray(gpu, tg, [rows], { dtype: "u32" });
    const m = fromArray(gpu, mask, [rows]);
    await checkOp(gpu, {
      shapes: [[rows, v]],
      run: ([x]) => crossEntropy(x, t, m),
      reference: ([x]) => Float64Array.of(crossEntropyRef(x, tg, mask, v)),
      maxDifferences: 60,
    });
    t.dispose();
    m.dispose();
  },
);

gpuTest("an all-zero mask gives loss 0; an out-of-range target gives NaN, not a number", async (gpu) => {
  const x = fromArray(gpu, new Float32Array(12), [3, 4]);
  const t = fromArray(gpu, [1, 2, 3], [3], { dtype: "u32" });
  const zero = fromArray(gpu, [0, 0, 0], [3]);
  assertClose(await crossEntropy(x, t, zero).download(), [0]);
  const bad = fromArray(gpu, [1, 9, 3], [3], { dtype: "u32" });
  const one = fromArray(gpu, [1, 1, 1], [3]);
  ok(Number.isNaN((await crossEntropy(x, bad, one).download())[0]));
  equal((await crossEntropy(x, t, one).download())[0].toFixed(5), Math.log(4).toFixed(5));
  throws(() => crossEntropy(x, one, one), /targets .* must be u32/);
  throws(
    () => crossEntropy(x, fromArray(gpu, [1, 2], [2], { dtype: "u32" }), one),
    /logits \[3, 4\] have 3 rows/,
  );
});

/**
 * crossEntropy of `rows` × `v` random logits on `gpu` against the f64 reference: the loss, and the
 * gradient at every logit against softmax − onehot (which a wrong lse would shift everywhere).
 */
async function checkXent(gpu: Gpu, rows: number, v: number, what: string): Promise<void> {
  const rand = rng(rows + v);
  const x = Float32Array.from({ length: rows * v }, () => 6 * rand() - 3);
  const tg = Array.from({ length: rows }, () => Math.floor(rand() * v));
  const mask = Array.from({ length: rows }, (_, r) => (r % 7 === 2 ? 0 : 1));
  const logits = param(gpu, x, [rows, v], "logits");
  const t = fromArray(gpu, tg, [rows], { dtype: "u32" });
  const m = fromArray(gpu, mask, [rows]);
  const loss = crossEntropy(logits, t, m);
  assertClose(await loss.download(), [crossEntropyRef(x, tg, mask, v)], { what: `${what}: loss` });
  backward(loss);
  assertClose(await logits.grad!.download(), crossEntropyGradRef(x, tg, mask, v), {
    rtol: 2e-3,
    atol: 1e-9,
    what: `${what}: dlogits`,
  });
  for (const a of [logits, t, m, loss]) a.dispose();
}

gpuTest(
  "cross-entropy over GPT-2's vocabulary and beyond 65,535 logits per row, in every kernel family",
  async () => {
    // 50257 and 65537 are odd (scalar loads); 50260 is read as vec4 units.
    for (const [name, gpu] of await kernelVariants()) {
      for (const v of [50257, 65537, 50260]) await checkXent(gpu, 48, v, `${name}, [48, ${v}]`);
    }
  },
);

gpuTest("cross-entropy over 70,000 rows (a finish longer than 65,535) in every kernel family", async () => {
  for (const [name, gpu] of await kernelVariants()) await checkXent(gpu, 70000, 3, `${name}, [70000, 3]`);
});
