import { throws } from "node:assert/strict";
import { add, mul, scale } from "../../core/ops/elementwise.ts";
import { fromArray } from "../../core/tensor.ts";
import { checkOp, gpuTest } from "../helpers.ts";

gpuTest("add of equal shapes and of a broadcast bias match the reference", async (gpu) => {
  await checkOp(gpu, {
    shapes: [[3, 5], [3, 5]],
    run: ([a, b]) => add(a, b),
    reference: ([a, b]) => a.map((v, i) => v + b[i]),
  });
  await checkOp(gpu, {
    shapes: [[2, 3, 5], [5]],
    run: ([a, b]) => add(a, b),
    reference: ([a, b]) => a.map((v, i) => v + b[i % 5]),
  });
});

gpuTest("mul of equal shapes and of a broadcast vector match the reference", async (gpu) => {
  await checkOp(gpu, {
    shapes: [[4, 7], [4, 7]],
    run: ([a, b]) => mul(a, b),
    reference: ([a, b]) => a.map((v, i) => v * b[i]),
  });
  await checkOp(gpu, {
    shapes: [[67, 3], [3]],
    run: ([a, b]) => mul(a, b),
    reference: ([a, b]) => a.map((v, i) => v * b[i % 3]),
  });
});

gpuTest("vec4 paths (sizes divisible by 4) of add, mul and scale match the reference", async (gpu) => {
  await checkOp(gpu, {
    shapes: [[3, 8], [8]],
    run: ([a, b]) => add(a, b),
    reference: ([a, b]) => a.map((v, i) => v + b[i % 8]),
  });
  await checkOp(gpu, {
    shapes: [[4, 4], [4, 4]],
    run: ([a, b]) => mul(a, b),
    reference: ([a, b]) => a.map((v, i) => v * b[i]),
  });
  await checkOp(gpu, {
    shapes: [[2, 4], [4]],
    run: ([a, b]) => mul(a, b),
    reference: ([a, b]) => a.map((v, i) => v * b[i % 4]),
  });
  await checkOp(gpu, { shapes: [[12]], run: ([a]) => scale(a, 3), reference: ([a]) => a.map((v) => 3 * v) });
});

gpuTest(
  "add and mul of big tensors (read through texture copies on software adapters) match the reference",
  async (gpu) => {
    await checkOp(gpu, {
      shapes: [[130, 128], [130, 128]],
      run: ([a, b]) => add(a, b),
      reference: ([a, b]) => a.map((v, i) => v + b[i]),
    });
    await checkOp(gpu, {
      shapes: [[130, 128], [128]],
      run: ([a, b]) => mul(a, b),
      reference: ([a, b]) => a.map((v, i) => v * b[i % 128]),
    });
  },
);

gpuTest("scale matches the reference", async (gpu) => {
  await checkOp(gpu, {
    shapes: [[9]],
    run: ([a]) => scale(a, -2.5),
    reference: ([a]) => a.map((v) => -2.5 * v),
  });
});

gpuTest("elementwise shape mismatches name both shapes", (gpu) => {
  const a = fromArray(gpu, new Float32Array(6), [2, 3]);
  const b = fromArray(gpu, new Float32Array(2), [2]);
  throws(() => add(a, b), /add: shapes \[2, 3\] and \[2\] do not broadcast/);
  throws(() => mul(b, a), /mul: shapes \[2\] and \[2, 3\] do not broadcast/);
  a.dispose();
  b.dispose();
});

gpuTest("zero-sized and non-integer shapes are refused with the shape", (gpu) => {
  throws(() => fromArray(gpu, [], [0, 3]), /shape \[0, 3\] has a dimension that is not a positive integer/);
  throws(() => fromArray(gpu, [1], [1.5]), /shape \[1\.5\]/);
  const a = fromArray(gpu, [1, 2], [2]);
  throws(() => a.upload([1, 2, 3]), /upload of 3 values, expected 2/);
  a.dispose();
});
