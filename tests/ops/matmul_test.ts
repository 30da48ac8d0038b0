import { equal, throws as assertThrows } from "node:assert/strict";
import { matmul, matmulShape, type MatmulVariant } from "../../core/ops/matmul.ts";
import { choosePackedForm, runPacked } from "../../core/ops/matmul_packed.ts";
import { empty, fromArray } from "../../core/tensor.ts";
import { matmulRef } from "../reference/cpu.ts";
import { assertClose, checkOp, gpuTest, randomArray, rng } from "../helpers.ts";

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

gpuTest(
  "packed matmul with 64-aligned operands (copy and texture-transpose packs) matches the reference",
  async (gpu) => {
    for (const [transA, transB] of [[false, false], [false, true], [true, false], [true, true]]) {
      const [m, n, k] = [64, 128, 64];
      await checkOp(gpu, {
        shapes: [transA ? [k, m] : [m, k], transB ? [n, k] : [k, n]],
        run: ([a, b]) => matmul(a, b, { transA, transB, variant: "packed" }),
        reference: ([a, b]) => matmulRef(a, b, m, n, k, transA, transB),
        maxDifferences: 40,
      });
    }
    await checkOp(gpu, {
      shapes: [[2, 70, 64], [2, 64, 128]],
      run: ([a, b]) => matmul(a, b, { variant: "packed" }),
      reference: ([a, b]) => batchedRef(a, b, 2, 70, 128, 64, false, false, false),
      maxDifferences: 40,
    });
  },
);

gpuTest(
  "both packed cores (outer, dot) match the reference in every orientation, aligned or not",
  async (gpu) => {
    for (const [m, n, k] of [[37, 45, 29], [64, 128, 64], [70, 64, 128]]) {
      for (const form of ["outer", "dot"] as const) {
        for (const [transA, transB] of [[false, false], [false, true], [true, false], [true, true]]) {
          const rand = rng(m + n + k);
          const a = randomArray(rand, m * k), b = randomArray(rand, k * n);
          const ta = fromArray(gpu, a, transA ? [k, m] : [m, k]);
          const tb = fromArray(gpu, b, transB ? [n, k] : [k, n]);
          const { s, shape } = matmulShape(ta, tb, { transA, transB });
          const c = empty(gpu, shape);
          runPacked(ta, tb, c, s, form);
          assertClose(await c.download(), matmulRef(a, b, m, n, k, transA, transB), {
            what: `${form} ${m}x${n}x${k} tA${+transA} tB${+transB}`,
          });
          for (const t of [ta, tb, c]) t.dispose();
        }
      }
    }
  },
);

Deno.test("the packed form is the one with less estimated transpose + core time", () => {
  const s = (m: number, n: number, k: number, transA: boolean, transB: boolean) => ({
    m,
    n,
    k,
    batch: 1,
    transA,
    transB,
    strideA: 0,
    strideB: 0,
  });
  equal(choosePackedForm(s(4096, 1024, 256, false, false), 16384), "outer"); // x·W: transposing x beats the slower dot core
  equal(choosePackedForm(s(16384, 256, 64, false, false), 16384), "dot"); // narrow W: transposing it is cheaper
  equal(choosePackedForm(s(256, 1024, 4096, false, false), 16384), "outer"); // transpose A (smaller)
  equal(choosePackedForm(s(4096, 256, 1024, false, true), 16384), "dot"); // dY·Wᵀ: no transpose
  equal(choosePackedForm(s(256, 1024, 4096, true, false), 16384), "outer"); // xᵀ·dY: no transpose
  equal(choosePackedForm(s(4096, 50304, 768, false, true), 16384), "outer"); // logits: V rows exceed the dot form
});

for (const variant of variants) {
  gpuTest(`matmul ${variant} with a fused bias matches x·W + b and its finite differences`, async (gpu) => {
    for (const [rows, c, n] of [[5, 7, 3], [64, 32, 64], [70, 9, 66]]) {
      await checkOp(gpu, {
        shapes: [[rows, c], [c, n], [n]],
        run: ([x, w, b]) => matmul(x, w, { variant, bias: b }),
        reference: ([x, w, b]) => matmulRef(x, w, rows, n, c).map((v, i) => v + b[i % n]),
        maxDifferences: 60,
      });
    }
  });
}

gpuTest("packed matmul falls back to the tiled kernel, bias included, when no texture fits", async (gpu) => {
  const limits = gpu.info.limits;
  const saved = limits.maxTextureDimension2D;
  const [rows, c, n] = [70, 9, 66];
  const s = (m: number) => ({ m, n, k: c, batch: 1, transA: false, transB: false, strideA: 0, strideB: 0 });
  limits.maxTextureDimension2D = 16;
  try {
    equal(choosePackedForm(s(rows), limits.maxTextureDimension2D), null, "the test needs no form to fit");
    await checkOp(gpu, {
      shapes: [[rows, c], [c, n], [n]],
      run: ([x, w, b]) => matmul(x, w, { variant: "packed", bias: b }),
      reference: ([x, w, b]) => matmulRef(x, w, rows, n, c).map((v, i) => v + b[i % n]),
      maxDifferences: 60,
    });
  } finally {
    limits.maxTextureDimension2D = saved;
  }
});
