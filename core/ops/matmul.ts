/**
 * Matmul with transposed variants and a batch dimension: forward and backward side by side.
 * Shapes: a [..., M, K] (or [K, M] with transA, 2-D only when b is 2-D), b [K, N] (or [N, K] with
 * transB) shared by every row of a, or b with the same batch dimensions as a.
 */
import { type MatmulPlan, type MatmulShape, matmulTiledKernel, tiledGrid } from "../../kernels/matmul.ts";
import { matmulSplitReduceKernel } from "../../kernels/matmul_splitk.ts";
import { matmulPlan, type MatmulVariant, matmulVariant } from "../../kernels/select.ts";
import { needsGrad, record } from "../autograd.ts";
import { empty, type Tensor, withCategory } from "../tensor.ts";
import { expectF32, expectSameGpu, fmt } from "./checks.ts";
import { runPacked } from "./matmul_packed.ts";
import { sumColumns } from "./reduce.ts";

export type { MatmulVariant };

/** Options of {@link matmul}. */
export interface MatmulOptions {
  /** a is stored K×M and used transposed. */
  transA?: boolean;
  /** b is stored N×K and used transposed. */
  transB?: boolean;
  /** Force a kernel variant (default: the device's kernel family picks, see kernels/select.ts). */
  variant?: MatmulVariant;
  /** A bias [N] added to every row, fused into the kernel's store (b must be 2-D). */
  bias?: Tensor;
}

/**
 * Records C = op(A)·op(B) (+ bias when `s.bias`) for the problem `s` into a new tensor of
 * `shape`, or into `out` (e.g. a row view of a bigger tensor); not recorded on the tape.
 */
export function runMatmul(
  a: Tensor,
  b: Tensor,
  s: MatmulShape,
  shape: readonly number[],
  variant?: MatmulVariant,
  out?: Tensor,
  bias?: Tensor,
): Tensor {
  const gpu = a.gpu;
  if (!!s.bias !== !!bias) throw new Error("runMatmul: the bias tensor and the problem's bias flag disagree");
  const c = out ?? empty(gpu, shape, { name: "matmul" });
  const packed = (variant ?? matmulVariant(gpu.kernels, s)) === "packed";
  // The tiled kernel also serves packed requests whose textures would exceed the device's limit.
  if (!packed || !runPacked(a, b, c, s, undefined, bias)) runTiled(a, b, c, s, undefined, bias);
  return c;
}

/**
 * Records c = op(a)·op(b) (+ bias) for `s` with the tiled kernel under `plan` (default: the one
 * kernels/select.ts picks for this device); a split-K plan sums its partials in a second kernel.
 */
export function runTiled(
  a: Tensor,
  b: Tensor,
  c: Tensor,
  s: MatmulShape,
  plan: MatmulPlan = matmulPlan(s, a.gpu.info.limits),
  bias?: Tensor,
): void {
  const gpu = a.gpu;
  const inputs = [a.binding("matmul"), b.binding("matmul")];
  if (plan.splits === 1) {
    const out = [c.binding("matmul"), ...(bias ? [bias.binding("matmul")] : [])];
    gpu.dispatch(matmulTiledKernel(s, plan), [...inputs, ...out], tiledGrid(s, plan));
    return;
  }
  const parts = withCategory(
    "workspace",
    () => empty(gpu, [plan.splits, s.batch * s.m * s.n], { name: "matmul_partials" }),
  );
  gpu.dispatch(
    matmulTiledKernel({ ...s, bias: false }, plan),
    [...inputs, parts.binding("matmul")],
    tiledGrid(s, plan),
  );
  const reduce = [parts.binding("matmul"), c.binding("matmul"), ...(bias ? [bias.binding("matmul")] : [])];
  gpu.dispatch(matmulSplitReduceKernel(s, plan.splits), reduce);
  parts.dispose();
}

function describe(a: Tensor, b: Tensor, o: MatmulOptions): string {
  return `a ${fmt(a.shape)}${o.transA ? "ᵀ" : ""} · b ${fmt(b.shape)}${o.transB ? "ᵀ" : ""}`;
}

/** The problem and output shape of matmul(a, b, o); throws naming both shapes when they do not fit. */
export function matmulShape(
  a: Tensor,
  b: Tensor,
  o: MatmulOptions = {},
): { s: MatmulShape; shape: number[] } {
  const transA = !!o.transA, transB = !!o.transB;
  if (a.shape.length < 2 || b.shape.length < 2) {
    throw new Error(`matmul: ${describe(a, b, o)}: both operands need at least 2 dimensions`);
  }
  const ar = a.shape.length, br = b.shape.length;
  const [a0, a1] = a.shape.slice(ar - 2);
  const [b0, b1] = b.shape.slice(br - 2);
  const [m, ka] = transA ? [a1, a0] : [a0, a1];
  const [kb, n] = transB ? [b1, b0] : [b0, b1];
  if (ka !== kb) {
    throw new Error(`matmul: ${describe(a, b, o)}: inner dimensions differ (${ka} vs ${kb})`);
  }
  const lead = a.shape.slice(0, ar - 2);
  if (br === 2) {
    if (transA && ar > 2) {
      throw new Error(`matmul: ${describe(a, b, o)}: transA with a batched a needs a batched b`);
    }
    const rows = lead.reduce((p, d) => p * d, 1) * m;
    return {
      s: { m: rows, n, k: ka, batch: 1, transA, transB, strideA: 0, strideB: 0 },
      shape: [...lead, m, n],
    };
  }
  const bLead = b.shape.slice(0, br - 2);
  if (ar !== br || lead.some((d, i) => d !== bLead[i])) {
    throw new Error(`matmul: ${describe(a, b, o)}: batch dimensions differ`);
  }
  const batch = lead.reduce((p, d) => p * d, 1);
  return {
    s: { m, n, k: ka, batch, transA, transB, strideA: m * ka, strideB: ka * n },
    shape: [...lead, m, n],
  };
}

/** op(a)·op(b) (+ bias); see the file comment for the shapes it accepts. */
export function matmul(a: Tensor, b: Tensor, o: MatmulOptions = {}): Tensor {
  expectF32("matmul", a);
  expectF32("matmul", b);
  expectSameGpu("matmul", a, b);
  const { s: plain, shape } = matmulShape(a, b, o);
  const bias = o.bias;
  if (bias) {
    expectF32("matmul", bias);
    expectSameGpu("matmul", a, bias);
    if (b.shape.length !== 2 || bias.size !== plain.n) {
      throw new Error(
        `matmul: bias ${fmt(bias.shape)} needs a 2-D b and ${plain.n} elements (${describe(a, b, o)})`,
      );
    }
  }
  const s = bias ? { ...plain, bias: true } : plain;
  const v = o.variant;
  const c = runMatmul(a, b, s, shape, v, undefined, bias);
  const { m, n, k, batch, transA, transB } = plain;
  const sc = m * n;
  const inputs = bias ? [a, b, bias] : [a, b];
  return record("matmul", c, inputs, [needsGrad(b) && a, needsGrad(a) && b], (g) => {
    let da: Tensor | null = null;
    let db: Tensor | null = null;
    if (needsGrad(a)) {
      da = transA
        ? runMatmul(
          b,
          g,
          { m: k, n: m, k: n, batch, transA: transB, transB: true, strideA: s.strideB, strideB: sc },
          a.shape,
          v,
        )
        : runMatmul(
          g,
          b,
          { m, n: k, k: n, batch, transA: false, transB: !transB, strideA: sc, strideB: s.strideB },
          a.shape,
          v,
        );
    }
    if (needsGrad(b)) {
      db = transB
        ? runMatmul(
          g,
          a,
          { m: n, n: k, k: m, batch, transA: true, transB: transA, strideA: sc, strideB: s.strideA },
          b.shape,
          v,
        )
        : runMatmul(
          a,
          g,
          { m: k, n, k: m, batch, transA: !transA, transB: false, strideA: s.strideA, strideB: sc },
          b.shape,
          v,
        );
    }
    const dbias = bias && needsGrad(bias) ? sumColumns(g, batch * m, n, bias.shape) : null;
    return bias ? [da, db, dbias] : [da, db];
  });
}
