/**
 * Every kernel that the row ops (cross-entropy, LayerNorm, sums, column sums, embedding backward)
 * pick for sizes too big to run here declares at most 65,535 loop iterations per invocation, in both
 * families, with and without subgroups. The ops' tests at runnable sizes check the numbers.
 */
import { ok } from "node:assert/strict";
import { embeddingPasses } from "../../core/ops/embedding.ts";
import { columnPasses, sumPasses } from "../../core/ops/reduce.ts";
import { embeddingBackwardKernel, embeddingForwardKernel } from "../../kernels/embedding.ts";
import { type Kernel, MAX_LOOP_ITERATIONS } from "../../kernels/kernel.ts";
import {
  layerNormBackwardKernel,
  layerNormForwardKernel,
  layerNormParamPartialsKernel,
} from "../../kernels/layernorm.ts";
import { layerNormBackwardGpuKernel, layerNormForwardGpuKernel } from "../../kernels/layernorm_rows.ts";
import {
  COLUMN_CHUNK,
  columnPartialsKernel,
  l2NormBackwardKernel,
  partialsInput,
  scalarOutput,
  tensorSumInput,
} from "../../kernels/reduce.ts";
import { embeddingRunSpan, layerNormPlan, xentRowsPlan } from "../../kernels/select.ts";
import {
  xentBackwardKernel,
  xentChunksKernel,
  xentCombineKernel,
  xentLossInput,
  xentLossOutput,
  xentRowsKernel,
} from "../../kernels/softmax_xent.ts";
import { xentRowsGpuKernel } from "../../kernels/xent_rows.ts";
import { KERNEL_FAMILIES } from "../helpers.ts";

const ROWS = [48, 70000];
const VOCABS = [50257, 65537, 50260, 256, 4096];
const WIDTHS = [1600, 1601, 768, 21847, 100003];
/** Device settings: no subgroups, lavapipe's 8, NVIDIA's 32. */
const SUBGROUPS = [0, 8, 32];

function expectBounded(kernels: Kernel[], what: string): void {
  for (const k of kernels) {
    ok(
      k.loops <= MAX_LOOP_ITERATIONS,
      `${what}: ${k.name} [${k.key}] declares ${k.loops} loop iterations per invocation`,
    );
  }
}

function xentKernels(family: "gpu" | "software", sg: number, rows: number, v: number): Kernel[] {
  const plan = xentRowsPlan(family, v, sg);
  const forward = plan.kind === "thread"
    ? [xentRowsKernel(rows, v)]
    : plan.kind === "workgroup"
    ? [xentRowsGpuKernel(rows, v, plan.threads, plan.subgroups)]
    : [xentChunksKernel(rows, v, plan.span), xentCombineKernel(rows, v, plan.chunks)];
  const finish = sumPasses(family, sg, xentLossInput(rows), xentLossOutput()).map((p) => p.kernel);
  return [...forward, ...finish, xentBackwardKernel(rows, v)];
}

function layerNormKernels(family: "gpu" | "software", sg: number, rows: number, c: number): Kernel[] {
  const plan = layerNormPlan(family, c, sg);
  const rowKernels = plan.kind === "thread"
    ? [layerNormForwardKernel(rows, c, 1e-5), layerNormBackwardKernel(rows, c)]
    : [
      layerNormForwardGpuKernel(rows, c, 1e-5, plan.threads, plan.subgroups),
      layerNormBackwardGpuKernel(rows, c, plan.threads, plan.subgroups),
    ];
  const chunks = Math.ceil(rows / COLUMN_CHUNK);
  const finish = columnPasses(family, chunks, c).map((p) => p.kernel);
  return [...rowKernels, layerNormParamPartialsKernel(rows, c), ...finish];
}

for (const family of KERNEL_FAMILIES) {
  Deno.test(`${family} cross-entropy kernels stay within the loop limit up to 65,537 logits and 70,000 rows`, () => {
    for (const sg of SUBGROUPS) {
      for (const rows of ROWS) {
        for (const v of VOCABS) expectBounded(xentKernels(family, sg, rows, v), `[${rows}, ${v}], sg ${sg}`);
      }
    }
  });

  Deno.test(`${family} LayerNorm kernels stay within the loop limit for C up to 100,003 and 70,000 rows`, () => {
    for (const sg of SUBGROUPS) {
      for (const rows of ROWS) {
        for (const c of WIDTHS) {
          expectBounded(layerNormKernels(family, sg, rows, c), `[${rows}, ${c}], sg ${sg}`);
        }
      }
    }
  });

  Deno.test(`${family} sums, norms and column sums stay within the loop limit at any length`, () => {
    for (const sg of SUBGROUPS) {
      for (const n of [3, 4100, 70000 * 4, 70001 * 3, 2 ** 31 - 4, 2 ** 31 - 1]) {
        const passes = sumPasses(family, sg, tensorSumInput(n, true, "storage"), scalarOutput(1, true, 0));
        expectBounded(passes.map((p) => p.kernel), `sum of ${n}, sg ${sg}`);
        expectBounded(
          sumPasses(family, sg, partialsInput(n, "f32"), scalarOutput(1, false, 0)).map((p) => p.kernel),
          `sum of ${n} partials, sg ${sg}`,
        );
      }
    }
    for (const rows of [70000, 2 ** 26]) {
      for (const cols of [3, 768, 1600]) {
        const first = columnPartialsKernel(rows, cols);
        const finish = columnPasses(family, Math.ceil(rows / COLUMN_CHUNK), cols).map((p) => p.kernel);
        expectBounded([first, ...finish], `column sums of [${rows}, ${cols}]`);
      }
    }
    expectBounded([l2NormBackwardKernel(70000 * 4)], "l2Norm backward");
  });

  Deno.test(`${family} embedding kernels stay within the loop limit when one token fills 70,000 positions`, () => {
    for (const n of [70000, 10 ** 7]) {
      const passes = embeddingPasses(Uint32Array.of(0, 5, n), embeddingRunSpan(family));
      const kernels = passes.map((p, i) =>
        embeddingBackwardKernel(p.start.length - 1, 768, p.maxRun, i === 0, i === passes.length - 1)
      );
      expectBounded([embeddingForwardKernel(n, 50257, 768), ...kernels], `${n} positions`);
    }
  });
}
