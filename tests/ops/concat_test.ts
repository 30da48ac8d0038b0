/** concatLast against a CPU reference and finite differences, scalar and vec4 copies, and its errors. */
import { equal, throws } from "node:assert/strict";
import { backward } from "../../core/autograd.ts";
import { concatLast } from "../../core/ops/concat.ts";
import { fromArray } from "../../core/tensor.ts";
import { checkOp, gpuTest, param } from "../helpers.ts";

/** Rows of each part side by side (f64). */
function concatRef(xs: Float64Array[], widths: number[], rows: number): Float64Array {
  const total = widths.reduce((a, b) => a + b, 0);
  const out = new Float64Array(rows * total);
  for (let r = 0; r < rows; r++) {
    let o = 0;
    xs.forEach((x, i) => {
      out.set(x.subarray(r * widths[i], (r + 1) * widths[i]), r * total + o);
      o += widths[i];
    });
  }
  return out;
}

gpuTest(
  "concatLast matches the reference and finite differences (odd widths, vec4 widths, 3-D)",
  async (gpu) => {
    const cases: [number[], number][] = [
      [[5, 8, 3], 3], // scalar copies: widths and offsets not multiples of 4
      [[16, 8, 8], 7], // vec4 copies: LLaMA's q, k, v with 2 kv heads of 8
      [[4, 12], 70], // many rows
    ];
    for (const [widths, rows] of cases) {
      await checkOp(gpu, {
        shapes: widths.map((w) => [rows, w]),
        run: (ts) => concatLast(ts),
        reference: (xs) => concatRef(xs, widths, rows),
      });
    }
    await checkOp(gpu, {
      shapes: [[2, 3, 4], [2, 3, 6]],
      run: (ts) => concatLast(ts),
      reference: (xs) => concatRef(xs, [4, 6], 6),
    });
  },
);

gpuTest(
  "concatLast gives a gradient only to the parts that need one, and names mismatched shapes",
  async (gpu) => {
    const a = param(gpu, new Float64Array(6).fill(1), [2, 3], "a");
    const b = fromArray(gpu, new Float32Array(4).fill(2), [2, 2], { name: "b" });
    const y = concatLast([a, b]);
    backward(y, fromArray(gpu, Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), [2, 5], { name: "g" }));
    equal(b.grad, null);
    equal([...(await a.grad!.download())].join(), "1,2,3,6,7,8");
    throws(
      () => concatLast([a, fromArray(gpu, new Float32Array(3), [3, 1])]),
      /\[2, 3\], \[3, 1\] differ before the last dimension/,
    );
    throws(() => concatLast([]), /no tensors/);
  },
);
