/** sum, mean, column sums and the global L2 norm, deterministic (fixed summation order). */
import { type Kernel, vectorWidth } from "../../kernels/kernel.ts";
import {
  COLUMN_CHUNK,
  columnPartialsKernel,
  l2NormBackwardKernel,
  partialsInput,
  partialsOutput,
  scalarOutput,
  type SumInput,
  type SumOutput,
  sumPassKernel,
  tensorSumInput,
} from "../../kernels/reduce.ts";
import { sumBlocksKernel } from "../../kernels/reduce_gpu.ts";
import { columnPassRows, type KernelFamily, type SumPass, sumPass } from "../../kernels/select.ts";
import { broadcastScalarKernel } from "../../kernels/elementwise.ts";
import { noGrad, record } from "../autograd.ts";
import type { Binding, Gpu } from "../gpu.ts";
import { empty, type Tensor, withCategory } from "../tensor.ts";
import { expectF32 } from "./checks.ts";
import { vec4Input } from "./pack.ts";

function passKernel(input: SumInput, pass: SumPass, output: SumOutput): Kernel {
  return pass.kind === "spans"
    ? sumPassKernel(input, pass.parts, output)
    : sumBlocksKernel(input, pass.threads, pass.perThread, pass.subgroups, output);
}

/** One pass of a sum: its kernel, and how many partials it writes (1: the last pass). */
export interface SumPassKernel {
  /** The kernel. */
  kernel: Kernel;
  /** Partial sums it writes. */
  parts: number;
}

/**
 * The passes summing `input` into `output` on a device of kernel family `family` (subgroupSize 0:
 * no subgroups): partials of partials until one pass covers everything, so no invocation loops
 * over more than kernels/select.ts allows however long the input.
 */
export function sumPasses(
  family: KernelFamily,
  subgroupSize: number,
  input: SumInput,
  output: SumOutput,
): SumPassKernel[] {
  const passes: SumPassKernel[] = [];
  for (let src = input;;) {
    const pass = sumPass(family, src.n, subgroupSize);
    if (pass.parts === 1) return [...passes, { kernel: passKernel(src, pass, output), parts: 1 }];
    passes.push({ kernel: passKernel(src, pass, partialsOutput(src.type)), parts: pass.parts });
    src = partialsInput(pass.parts, src.type);
  }
}

/**
 * Records the {@link sumPasses} of `input` (bound to `bindings`) writing through `output` (bound
 * to `outBindings`).
 */
export function sumInto(
  gpu: Gpu,
  input: SumInput,
  bindings: readonly Binding[],
  output: SumOutput,
  outBindings: readonly Binding[],
  op: string,
): void {
  const lanes = input.type === "f32" ? 1 : 2;
  let [bound, held] = [bindings, null as Tensor | null];
  for (const { kernel, parts } of sumPasses(gpu.kernels, gpu.info.subgroupSize, input, output)) {
    if (parts === 1) {
      gpu.dispatch(kernel, [...bound, ...outBindings]);
      break;
    }
    const part = withCategory("workspace", () => empty(gpu, [parts, lanes], { name: `${op}_partials` }));
    gpu.dispatch(kernel, [...bound, part.binding(op)]);
    held?.dispose();
    [bound, held] = [[part.binding(op)], part];
  }
  held?.dispose();
}

/** Writes f(scale·Σx) (or of Σx²) into out[slot]; f is sqrt when `sqrt`. */
function reduceInto(
  x: Tensor,
  out: Tensor,
  slot: number,
  scale: number,
  square: boolean,
  sqrt: boolean,
): void {
  const xin = vec4Input(x, "sum", vectorWidth(x.size));
  sumInto(
    x.gpu,
    tensorSumInput(x.size, square, xin.src),
    [xin.binding],
    scalarOutput(scale, sqrt, slot),
    [out.binding("sum")],
    "sum",
  );
  xin.done();
}

function reduceAll(x: Tensor, c: number): Tensor {
  const out = empty(x.gpu, [1], { name: c === 1 ? "sum" : "mean" });
  reduceInto(x, out, 0, c, false, false);
  return out;
}

function broadcastBack(g: Tensor, shape: readonly number[], c: number): Tensor {
  const out = empty(g.gpu, shape, { name: "dsum" });
  g.gpu.dispatch(
    broadcastScalarKernel(out.size, c),
    [g.binding("sum"), out.binding("sum")],
  );
  return out;
}

/** Σ of all elements, as a one-element tensor. */
export function sum(x: Tensor): Tensor {
  expectF32("sum", x);
  return record("sum", reduceAll(x, 1), [x], [], (g) => [broadcastBack(g, x.shape, 1)]);
}

/** Mean of all elements, as a one-element tensor. */
export function mean(x: Tensor): Tensor {
  expectF32("mean", x);
  return record("mean", reduceAll(x, 1 / x.size), [x], [], (g) => [broadcastBack(g, x.shape, 1 / x.size)]);
}

/**
 * The passes finishing column sums of `rows` × `cols` partials: each sums spans of rows, as many
 * as kernels/select.ts allows, into `parts` rows, until one row is left.
 */
export function columnPasses(family: KernelFamily, rows: number, cols: number): SumPassKernel[] {
  const passes: SumPassKernel[] = [];
  let n = rows;
  do {
    const span = columnPassRows(family, n);
    const parts = Math.ceil(n / span);
    passes.push({ kernel: columnPartialsKernel(n, cols, "storage", span), parts });
    n = parts;
  } while (n > 1);
  return passes;
}

/** Records out = column sums of `partials` (rows × cols) by {@link columnPasses}; `partials` is left as it was. */
export function finishColumns(partials: Tensor, rows: number, cols: number, out: Tensor, op: string): void {
  const gpu = partials.gpu;
  let src = partials;
  for (const { kernel, parts } of columnPasses(gpu.kernels, rows, cols)) {
    const dst = parts === 1
      ? out
      : withCategory("workspace", () => empty(gpu, [parts, cols], { name: `${op}_column_partials` }));
    gpu.dispatch(kernel, [src.binding(op), dst.binding(op)]);
    if (src !== partials) src.dispose();
    src = dst;
  }
}

/** Column sums of x viewed as rows × cols, shaped `shape` (the bias gradient); not recorded. */
export function sumColumns(x: Tensor, rows: number, cols: number, shape: readonly number[]): Tensor {
  const out = empty(x.gpu, shape, { name: "sum_columns" });
  const xin = vec4Input(x, "sum_columns", vectorWidth(cols));
  const partials = columnPartialsKernel(rows, cols, xin.src);
  if (rows <= COLUMN_CHUNK) {
    x.gpu.dispatch(partials, [xin.binding, out.binding("sum_columns")]);
    xin.done();
    return out;
  }
  const chunks = Math.ceil(rows / COLUMN_CHUNK);
  const p = withCategory("workspace", () => empty(x.gpu, [chunks, cols], { name: "column_partials" }));
  x.gpu.dispatch(partials, [xin.binding, p.binding("sum_columns")]);
  xin.done();
  finishColumns(p, chunks, cols, out, "sum_columns");
  p.dispose();
  return out;
}

/** ‖x‖₂ as a one-element tensor; backward gives x/‖x‖ (NaN at x = 0, where it is undefined). */
export function l2Norm(x: Tensor): Tensor {
  expectF32("l2Norm", x);
  const out = empty(x.gpu, [1], { name: "l2norm" });
  reduceInto(x, out, 0, 1, true, true);
  return record("l2Norm", out, [x], [x, out], (g) => {
    const dx = empty(x.gpu, x.shape, { name: "dl2norm" });
    x.gpu.dispatch(l2NormBackwardKernel(x.size), [
      x.binding("l2Norm"),
      out.binding("l2Norm"),
      g.binding("l2Norm"),
      dx.binding("l2Norm"),
    ]);
    return [dx];
  });
}

/**
 * Global L2 norm of several tensors, √(Σ_t ‖t‖²), as a one-element tensor (gradient clipping);
 * not differentiable.
 */
export function globalNorm(gpu: Gpu, xs: readonly Tensor[]): Tensor {
  if (xs.length === 0) throw new Error("globalNorm: no tensors");
  return noGrad(() => {
    const squares = withCategory("workspace", () => empty(gpu, [xs.length], { name: "norm_squares" }));
    xs.forEach((x, i) => {
      expectF32("globalNorm", x);
      reduceInto(x, squares, i, 1, true, false);
    });
    const out = empty(gpu, [1], { name: "global_norm" });
    sumInto(
      gpu,
      partialsInput(xs.length, "f32"),
      [squares.binding("globalNorm")],
      scalarOutput(1, true, 0),
      [out.binding("globalNorm")],
      "globalNorm",
    );
    squares.dispose();
    return out;
  });
}
