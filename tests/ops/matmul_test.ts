import { throws as assertThrows } from "node:assert/strict";
import { matmul, type MatmulVariant } from "../../core/ops/matmul.ts";
import { fromArray } from "../../core/tensor.ts";
import { matmulRef } from "../reference/cpu.ts";
import { checkOp, gpuTest } from "../helpers.ts";

/** Batched reference: items of a and b laid out back to back (b shared when bBatch is false). */
function batchedRef(
  a: Float64Array,
  b: Float64Array,
  batch: number,
  m: number,
  n: number,
  k: number,
  tA: boolean,
  tB: boolean,
  bShared: boolean,
): Float64Array {
  const out = new Float64Array(batch * m * n);
  for (let i = 0; i < batch; i++) {
    const bi = bShared ? b : b.subarray(i * k * n, (i + 1) * k * n);
    out.set(matmulRef(a.subarray(i * m * k, (i + 1) * m * k), bi, m, n, k, tA, tB), i * m * n);
  }
  return out;
}

const variants: MatmulVariant[] = ["packed", "tiled"];
// Odd sizes: no dimension is a multiple of any tile (4, 16, 64).
const cases: [number, number, number][] = [[1, 1, 1], [5, 7, 3], [37, 45, 29], [70, 9, 66]];

for (const variant of variants) {
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      gpuTest(
        `matmul ${variant} ${transA ? "Aᵀ" : "A"}·${
          transB ? "Bᵀ" : "B"
        } matches the CPU reference and finite differences`,
        async (gpu) => {
          for (const [m, n, k] of cases) {
            await checkOp(gpu, {
              shapes: [transA ? [k, m] : [m, k], transB ? [n, k] : [k, n]],
              run: ([a, b]) => matmul(a, b, { transA, transB, variant }),
              reference: ([a, b]) => matmulRef(a, b, m, n, k, transA, transB),
              seed: m * 1000 + n,
            });
          }
        },
      );
    }
  }
  gpuTest(`matmul ${variant} batched (attention-style) matches the reference`, async (gpu) => {
    const [batch, m, n, k] = [3, 6, 5, 7];
    for (const transB of [false, true]) {
      await checkOp(gpu, {
        shapes: [[batch, m, k], transB ? [batch, n, k] : [batch, k, n]],
        run: ([a, b]) => matmul(a, b, { transB, variant }),
        reference: ([a, b]) => batchedRef(a, b, batch, m, n, k, false, transB, false),
      });
    }
  });
  gpuTest(
    `matmul ${variant} of [B, T, C] by a shared weight sums the weight gradient over the batch`,
    async (gpu) => {
      const [bsz, t, c, n] = [2, 5, 6, 7];
      await checkOp(gpu, {
        shapes: [[bsz, t, c], [c, n]],
        run: ([x, w]) => matmul(x, w, { variant }),
        reference: ([x, w]) => matmulRef(x, w, bsz * t, n, c),
      });
    },
  );
}

gpuTest("matmul shape mismatches name both shapes", (gpu) => {
  const a = fromArray(gpu, new Float32Array(6), [2, 3]);
  const b = fromArray(gpu, new Float32Array(8), [4, 2]);
  assertThrows(() => matmul(a, b), /matmul: a \[2, 3\] · b \[4, 2\]: inner dimensions differ \(3 vs 4\)/);
  assertThrows(() => matmul(a, b, { transB: true }), /inner dimensions differ \(3 vs 2\)/);
  const v = fromArray(gpu, new Float32Array(3), [3]);
  assertThrows(() => matmul(v, b), /at least 2 dimensions/);
  const x = fromArray(gpu, new Float32Array(24), [2, 3, 4]);
  const y = fromArray(gpu, new Float32Array(24), [3, 4, 2]);
  assertThrows(() => matmul(x, y), /batch dimensions differ/);
  for (const t of [a, b, v, x, y]) t.dispose();
});
