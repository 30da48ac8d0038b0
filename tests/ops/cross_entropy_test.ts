import { equal, ok, throws } from "node:assert/strict";
import { crossEntropy } from "../../core/ops/cross_entropy.ts";
import { fromArray } from "../../core/tensor.ts";
import { crossEntropyRef } from "../reference/cpu.ts";
import { assertClose, checkOp, gpuTest } from "../helpers.ts";

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
