/** sum, mean, column sums and the global L2 norm, deterministic (fixed summation order). */
import { vectorWidth } from "../../kernels/kernel.ts";
import {
  COLUMN_CHUNK,
  columnFinishKernel,
  columnPartialsKernel,
  l2NormBackwardKernel,
  sumFinishKernel,
  sumPartialsKernel,
  sumParts,
} from "../../kernels/reduce.ts";
import { broadcastScalarKernel } from "../../kernels/elementwise.ts";
import { noGrad, record } from "../autograd.ts";
import type { Gpu } from "../gpu.ts";
import { empty, type Tensor, withCategory } from "../tensor.ts";
import { expectF32 } from "./checks.ts";
import { vec4Input } from "./pack.ts";

function partials(x: Tensor, square: boolean): Tensor {
  const p = withCategory("workspace", () => empty(x.gpu, [sumParts(x.size)], { name: "sum_partials" }));
  const xin = vec4Input(x, "sum", vectorWidth(x.size));
  x.gpu.dispatch(sumPartialsKernel(x.size, square, xin.src), [xin.binding, p.binding("sum")]);
  xin.done();
  return p;
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
  const p = partials(x, square);
  x.gpu.dispatch(sumFinishKernel(p.size, scale, sqrt, slot), [p.binding("sum"), out.binding("sum")], [1]);
  p.dispose();
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
  x.gpu.dispatch(columnFinishKernel(chunks, cols), [p.binding("sum_columns"), out.binding("sum_columns")]);
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
    gpu.dispatch(sumFinishKernel(xs.length, 1, true, 0), [
      squares.binding("globalNorm"),
      out.binding("globalNorm"),
    ], [1]);
    squares.dispose();
    return out;
  });
}
