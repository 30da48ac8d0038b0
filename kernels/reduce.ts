/**
 * Deterministic reductions (fixed summation order, no float atomics): a two-stage sum to a scalar,
 * optionally of squares, and column sums (bias gradients) via per-chunk partials.
 */
import { f32, grid, type Kernel, WGSL_GRID_PARAMS, WGSL_GROUP_INDEX } from "./kernel.ts";

/** Threads of the first stage of {@link sumPartialsKernel} for n elements. */
export function sumParts(n: number): number {
  return Math.min(n, 1024);
}

/** partial[t] = Σ x[i] (or x[i]²) over i ≡ t (mod parts). */
export function sumPartialsKernel(n: number, square: boolean): Kernel {
  const parts = sumParts(n);
  return {
    name: "sum_partials",
    key: `n${n}_sq${+square}`,
    code: `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let t = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (t >= ${parts}u) { return; }
  var s = 0.0;
  for (var i = t; i < ${n}u; i += ${parts}u) { let v = x[i]; s += ${square ? "v * v" : "v"}; }
  partial[t] = s;
}`,
  };
}

/** Workgroups for {@link sumPartialsKernel}. */
export function sumPartialsGrid(n: number): [number, number] {
  return grid(Math.ceil(sumParts(n) / 64));
}

/**
 * out[slot] = f(scale · Σ partial[0..parts)) with f the identity or sqrt: finishes a sum, a mean,
 * or an L2 norm, written at `slot` so several norms can share one output.
 */
export function sumFinishKernel(parts: number, scale: number, sqrt: boolean, slot: number): Kernel {
  return {
    name: "sum_finish",
    key: `p${parts}_c${scale}_sqrt${+sqrt}_at${slot}`,
    code: `@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(1)
fn main() {
  var s = 0.0;
  for (var i = 0u; i < ${parts}u; i++) { s += partial[i]; }
  s = s * ${f32(scale)};
  out[${slot}u] = ${sqrt ? "sqrt(s)" : "s"};
}`,
  };
}

/** Rows summed per partial by {@link columnPartialsKernel}. */
export const COLUMN_CHUNK = 64;

/** partial[c, j] = Σ x[r, j] over the rows r of chunk c (rows × cols input). */
export function columnPartialsKernel(rows: number, cols: number): Kernel {
  const chunks = Math.ceil(rows / COLUMN_CHUNK);
  return {
    name: "column_partials",
    key: `r${rows}_c${cols}`,
    code: `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let t = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (t >= ${chunks * cols}u) { return; }
  let c = t / ${cols}u;
  let j = t % ${cols}u;
  let end = min((c + 1u) * ${COLUMN_CHUNK}u, ${rows}u);
  var s = 0.0;
  for (var r = c * ${COLUMN_CHUNK}u; r < end; r++) { s += x[r * ${cols}u + j]; }
  partial[t] = s;
}`,
  };
}

/** out[j] = Σ_c partial[c, j] (chunks × cols partials). */
export function columnFinishKernel(chunks: number, cols: number): Kernel {
  return {
    name: "column_finish",
    key: `k${chunks}_c${cols}`,
    code: `@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let j = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (j >= ${cols}u) { return; }
  var s = 0.0;
  for (var c = 0u; c < ${chunks}u; c++) { s += partial[c * ${cols}u + j]; }
  out[j] = s;
}`,
  };
}

/** dx[i] = g[0] · x[i] / norm[0]: the gradient of ‖x‖₂. */
export function l2NormBackwardKernel(n: number): Kernel {
  return {
    name: "l2norm_backward",
    key: `n${n}`,
    code: `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> norm: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let i = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (i >= ${n}u) { return; }
  dx[i] = g[0] * x[i] / norm[0];
}`,
  };
}
