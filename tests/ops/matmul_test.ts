import { equal, ok, throws as assertThrows } from "node:assert/strict";
import { matmul, matmulShape, type MatmulVariant, runTiled } from "../../core/ops/matmul.ts";
import { choosePackedForm, runPacked } from "../../core/ops/matmul_packed.ts";
import { empty, fromArray } from "../../core/tensor.ts";
import { checkLoops, KernelLimitError, MAX_LOOP_ITERATIONS } from "../../kernels/kernel.ts";
import {
  type MatmulShape,
  matmulTiledKernel,
  planFor,
  tiledWorkgroups,
  tileWorkgroupBytes,
} from "../../kernels/matmul.ts";
import { type KernelFamily, MATMUL_TILES, matmulPlan } from "../../kernels/select.ts";
import { matmulRef } from "../reference/cpu.ts";
import { assertClose, checkOp, gpuTest, randomArray, rng } from "../helpers.ts";

/** Batched reference: items of a and b laid out back to back (b shared when bShared). */
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

/** A 2-D problem (batch 1), as matmulShape would describe it. */
function shape2d(m: number, n: number, k: number, transA = false, transB = false): MatmulShape {
  return { m, n, k, batch: 1, transA, transB, strideA: 0, strideB: 0 };
}

const FORMS: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];
const formName = (tA: boolean, tB: boolean) => `${tA ? "Aᵀ" : "A"}·${tB ? "Bᵀ" : "B"}`;

// The packed variant on the software family, and the GPU family's own plan (tiled kernels run on
// this software adapter too, slowly but with the same numbers).
const RUNS: { name: string; variant?: MatmulVariant; kernels?: KernelFamily; cases: number[][] }[] = [
  { name: "packed", variant: "packed", cases: [[1, 1, 1], [5, 7, 3], [37, 45, 29], [70, 9, 66]] },
  // No size is a multiple of any tile (4, 16, 64, 128).
  { name: "gpu family", kernels: "gpu", cases: [[1, 1, 1], [37, 45, 29], [130, 67, 45], [129, 129, 17]] },
];

for (const { name, variant, kernels, cases } of RUNS) {
  for (const [transA, transB] of FORMS) {
    gpuTest(
      `matmul ${name} ${formName(transA, transB)} matches the CPU reference and finite differences`,
      async (gpu) => {
        for (const [m, n, k] of cases) {
          await checkOp(gpu, {
            shapes: [transA ? [k, m] : [m, k], transB ? [n, k] : [k, n]],
            run: ([a, b]) => matmul(a, b, { transA, transB, variant }),
            reference: ([a, b]) => matmulRef(a, b, m, n, k, transA, transB),
            seed: m * 1000 + n,
            maxDifferences: 60,
          });
        }
      },
      { kernels },
    );
  }
  gpuTest(`matmul ${name} batched (attention-style) matches the reference`, async (gpu) => {
    const [batch, m, n, k] = [3, 6, 5, 7];
    for (const transB of [false, true]) {
      await checkOp(gpu, {
        shapes: [[batch, m, k], transB ? [batch, n, k] : [batch, k, n]],
        run: ([a, b]) => matmul(a, b, { transB, variant }),
        reference: ([a, b]) => batchedRef(a, b, batch, m, n, k, false, transB, false),
      });
    }
  }, { kernels });
  gpuTest(
    `matmul ${name} of [B, T, C] by a shared weight sums the weight gradient over the batch`,
    async (gpu) => {
      const [bsz, t, c, n] = [2, 5, 6, 7];
      await checkOp(gpu, {
        shapes: [[bsz, t, c], [c, n]],
        run: ([x, w]) => matmul(x, w, { variant }),
        reference: ([x, w]) => matmulRef(x, w, bsz * t, n, c),
      });
    },
    { kernels },
  );
  gpuTest(`matmul ${name} with a fused bias matches x·W + b and its finite differences`, async (gpu) => {
    for (const [rows, c, n] of [[5, 7, 3], [64, 32, 64], [70, 9, 66]]) {
      await checkOp(gpu, {
        shapes: [[rows, c], [c, n], [n]],
        run: ([x, w, b]) => matmul(x, w, { variant, bias: b }),
        reference: ([x, w, b]) => matmulRef(x, w, rows, n, c).map((v, i) => v + b[i % n]),
        maxDifferences: 60,
      });
    }
  }, { kernels });
}

gpuTest(
  "every tiled-matmul tile computes every form, batched, biased, split or not, at ragged sizes",
  async (gpu) => {
    // No size fills a tile. 37×68×29 loads A one float at a time and B (not transposed) four at
    // a time, 132×45×44 the other way round; with two forms each, every operand is loaded both
    // ways in both orientations. The first shares B across the batch; the second splits K in two.
    const problems = [
      { m: 37, n: 68, k: 29, batch: 2, bShared: true, splits: 1, forms: [FORMS[0], FORMS[3]] },
      { m: 132, n: 45, k: 44, batch: 2, bShared: false, splits: 2, forms: [FORMS[1], FORMS[2]] },
    ];
    for (const tile of MATMUL_TILES) {
      for (const p of problems) {
        for (const [transA, transB] of p.forms) {
          const { m, n, k, batch, bShared } = p;
          const s: MatmulShape = {
            m,
            n,
            k,
            batch,
            transA,
            transB,
            strideA: m * k,
            strideB: bShared ? 0 : k * n,
            bias: true,
          };
          const plan = planFor(s, tile, p.splits);
          equal(plan.splits, p.splits);
          const rand = rng(m + n + k);
          const a = randomArray(rand, batch * m * k);
          const b = randomArray(rand, (bShared ? 1 : batch) * k * n);
          const bias = randomArray(rand, n);
          const ta = fromArray(gpu, a, [batch * m * k]);
          const tb = fromArray(gpu, b, [b.length]);
          const tbias = fromArray(gpu, bias, [n]);
          const c = empty(gpu, [batch * m * n]);
          runTiled(ta, tb, c, s, plan, tbias);
          const expected = batchedRef(a, b, batch, m, n, k, transA, transB, bShared).map((v, i) =>
            v + bias[i % n]
          );
          assertClose(await c.download(), expected, {
            what: `tile ${JSON.stringify(tile)} ${
              formName(transA, transB)
            } ${m}x${n}x${k} splits ${p.splits}`,
          });
          for (const t of [ta, tb, tbias, c]) t.dispose();
        }
      }
    }
  },
  { kernels: "gpu" },
);

gpuTest("LoRA's rank-8 products run on skinny tiles and match the reference", async (gpu) => {
  // x·A (N = 8) and the B-gradient-shaped [8, T]·[T, C] (M = 8, K split over workgroups).
  for (const [m, n, k] of [[4096, 8, 768], [8, 768, 4096]]) {
    const s = shape2d(m, n, k);
    const plan = matmulPlan(s, gpu.info.limits);
    equal(n <= 16 ? plan.tile.bn : plan.tile.bm, 16, `${m}x${n}x${k} gets a 16-wide tile on its rank-8 side`);
    const rand = rng(m + n);
    const a = randomArray(rand, m * k), b = randomArray(rand, k * n);
    const ta = fromArray(gpu, a, [m, k]), tb = fromArray(gpu, b, [k, n]);
    const c = matmul(ta, tb);
    assertClose(await c.download(), matmulRef(a, b, m, n, k), {
      what: `${m}x${n}x${k}`,
      rtol: 1e-4,
      atol: 1e-4,
    });
    for (const t of [ta, tb, c]) t.dispose();
  }
}, { kernels: "gpu" });

gpuTest("a split-K matmul (8×20 from K = 3000) matches the reference and finite differences", async (gpu) => {
  const [m, n, k] = [8, 20, 3000];
  ok(matmulPlan(shape2d(m, n, k), gpu.info.limits).splits > 1, "the plan splits K");
  await checkOp(gpu, {
    shapes: [[m, k], [k, n]],
    run: ([a, b]) => matmul(a, b),
    reference: ([a, b]) => matmulRef(a, b, m, n, k),
    atol: 1e-4,
    maxDifferences: 30,
  });
}, { kernels: "gpu" });

// An H200's limits and WebGPU's defaults.
const BIG = { maxComputeWorkgroupStorageSize: 49152, maxComputeInvocationsPerWorkgroup: 1024 };
const DEFAULT = { maxComputeWorkgroupStorageSize: 16384, maxComputeInvocationsPerWorkgroup: 256 };

Deno.test("the matmul plan splits K when one invocation would otherwise pass 65,535 k steps", () => {
  for (const limits of [BIG, DEFAULT]) {
    for (const s of [shape2d(4096, 4096, 65535 * 16 + 1), shape2d(8, 768, 3_000_000, true)]) {
      const plan = matmulPlan(s, limits);
      const kernel = matmulTiledKernel(s, plan);
      ok(plan.splits > 1, `${s.k}: split`);
      ok(kernel.loops <= MAX_LOOP_ITERATIONS, `${s.k}: ${kernel.loops} loops`);
      ok(plan.splits * plan.kPerSplit >= s.k && (plan.splits - 1) * plan.kPerSplit < s.k, "splits cover K");
      assertThrows(() => checkLoops(matmulTiledKernel(s, planFor(s, plan.tile))), KernelLimitError);
    }
  }
});

Deno.test("the matmul plan fits the device and fills it", () => {
  // GPT-2 124M at 8192 tokens, forward and backward: 128×128 tiles, 16 deep where 17 KiB fit.
  for (
    const [m, n, k, tA, tB] of [[4096, 4096, 4096], [8192, 3072, 768], [8192, 768, 3072], [8192, 2304, 768], [
      8192,
      768,
      3072,
      false,
      true,
    ]] as [number, number, number, boolean?, boolean?][]
  ) {
    const s = shape2d(m, n, k, tA, tB);
    const big = matmulPlan(s, BIG), small = matmulPlan(s, DEFAULT);
    equal(big.splits, 1);
    equal(`${big.tile.bm}x${big.tile.bn}x${big.tile.bk}`, "128x128x16", `${m}x${n}x${k}`);
    equal(`${small.tile.bm}x${small.tile.bn}x${small.tile.bk}`, "128x128x8", `${m}x${n}x${k}`);
    ok(tileWorkgroupBytes(small.tile) <= DEFAULT.maxComputeWorkgroupStorageSize);
  }
  // Weight gradients have few output tiles and a long K: split it until the GPU is full.
  for (const [m, n] of [[768, 768], [768, 3072]]) {
    const s = shape2d(m, n, 8192, true, false);
    const plan = matmulPlan(s, BIG);
    equal(plan.tile.bm, 128);
    ok(plan.splits > 1 && tiledWorkgroups(s, plan) >= 256, `${m}x${n}: ${plan.splits} splits`);
  }
  // Small problems take the 64×64 tile, unsplit when K is short.
  const small = matmulPlan(shape2d(129, 129, 17), BIG);
  equal(small.tile.bm, 64);
  equal(small.splits, 1);
});

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
    for (const [transA, transB] of FORMS) {
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
        for (const [transA, transB] of FORMS) {
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
  const s = shape2d;
  equal(choosePackedForm(s(4096, 1024, 256, false, false), 16384), "outer"); // x·W: transposing x beats the slower dot core
  equal(choosePackedForm(s(16384, 256, 64, false, false), 16384), "dot"); // narrow W: transposing it is cheaper
  equal(choosePackedForm(s(256, 1024, 4096, false, false), 16384), "outer"); // transpose A (smaller)
  equal(choosePackedForm(s(4096, 256, 1024, false, true), 16384), "dot"); // dY·Wᵀ: no transpose
  equal(choosePackedForm(s(256, 1024, 4096, true, false), 16384), "outer"); // xᵀ·dY: no transpose
  equal(choosePackedForm(s(4096, 50304, 768, false, true), 16384), "outer"); // logits: V rows exceed the dot form
});

gpuTest("packed matmul falls back to the tiled kernel, bias included, when no texture fits", async (gpu) => {
  const limits = gpu.info.limits;
  const saved = limits.maxTextureDimension2D;
  const [rows, c, n] = [70, 9, 66];
  limits.maxTextureDimension2D = 16;
  try {
    equal(
      choosePackedForm(shape2d(rows, n, c), limits.maxTextureDimension2D),
      null,
      "the test needs no form to fit",
    );
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

gpuTest("variant tiled on a software-family device matches the reference", async (gpu) => {
  const [m, n, k] = [70, 9, 66];
  await checkOp(gpu, {
    shapes: [[m, k], [n, k]],
    run: ([a, b]) => matmul(a, b, { transB: true, variant: "tiled" }),
    reference: ([a, b]) => matmulRef(a, b, m, n, k, false, true),
    maxDifferences: 40,
  });
});

gpuTest(
  "a packed operand taller than a texture (GPT-2's 50257-row wte on lavapipe) is packed from its buffer",
  async (gpu) => {
    // x·Wᵀ with W stored [n, k], k a multiple of 64, n one row-block past the device's texture height:
    // the outer core wants W k-major, a transpose whose row-for-row staging texture would need n rows.
    const [m, n, k] = [4, gpu.info.limits.maxTextureDimension2D + 64, 64];
    const rand = rng(7);
    const a = randomArray(rand, m * k), b = randomArray(rand, n * k);
    const ta = fromArray(gpu, a, [m, k]), tb = fromArray(gpu, b, [n, k]);
    const { s, shape } = matmulShape(ta, tb, { transB: true });
    equal(choosePackedForm(s, gpu.info.limits.maxTextureDimension2D), "outer", "the packed layout fits");
    const c = empty(gpu, shape);
    ok(runPacked(ta, tb, c, s, "outer"));
    assertClose(await c.download(), matmulRef(a, b, m, n, k, false, true), {
      what: "x·Wᵀ, W taller than a texture",
    });
    for (const t of [ta, tb, c]) t.dispose();
  },
);
