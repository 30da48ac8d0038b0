/**
 * Deterministic reductions (fixed summation order, no float atomics): a two-stage sum to a scalar,
 * optionally of squares, and column sums (bias gradients) via per-chunk partials. Inputs are read
 * as vec4 where the sizes allow.
 */
import {
  f32,
  floatInput,
  floatType,
  grid,
  type Kernel,
  type Source,
  vectorWidth,
  WGSL_GRID_PARAMS,
  WGSL_GROUP_INDEX,
} from "./kernel.ts";

/** Threads of the first stage of {@link sumPartialsKernel} for n elements. */
export function sumParts(n: number): number {
  return Math.min(Math.ceil(n / vectorWidth(n)), 1024);
}

/** partial[t] = Σ x[i] (or x[i]²) over the vec4 (or scalar) units i ≡ t (mod parts); vec4 units from `src`. */
export function sumPartialsKernel(n: number, square: boolean, src: Source = "storage"): Kernel {
  const w = vectorWidth(n);
  const parts = sumParts(n);
  const t = floatType(w);
  const total = w === 4 ? "s.x + s.y + s.z + s.w" : "s";
  const input = floatInput("sum_partials", "x", 0, w, src);
  return {
    name: "sum_partials",
    key: `n${n}_sq${+square}_${src}`,
    loops: Math.ceil(n / w / parts),
    workgroups: grid(Math.ceil(parts / 64)),
    code: `${input}
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let t = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (t >= ${parts}u) { return; }
  var s = ${t}(0.0);
  for (var i = t; i < ${n / w}u; i += ${parts}u) { let v = x(i); s += ${square ? "v * v" : "v"}; }
  partial[t] = ${total};
}`,
  };
}

/**
 * out[slot] = f(scale · Σ partial[0..parts)) with f the identity or sqrt: finishes a sum, a mean,
 * or an L2 norm, written at `slot` so several norms can share one output.
 */
export function sumFinishKernel(parts: number, scale: number, sqrt: boolean, slot: number): Kernel {
  return {
    name: "sum_finish",
    key: `p${parts}_c${scale}_sqrt${+sqrt}_at${slot}`,
    loops: parts,
    workgroups: [1],
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

/**
 * partial[c, j] = Σ x[r, j] over the rows r of chunk c (rows × cols input; vec4 columns, read from
 * `src`, when cols % 4 = 0).
 */
export function columnPartialsKernel(rows: number, cols: number, src: Source = "storage"): Kernel {
  const w = vectorWidth(cols);
  const t = floatType(w);
  const units = cols / w;
  const chunks = Math.ceil(rows / COLUMN_CHUNK);
  const input = floatInput("column_partials", "x", 0, w, src);
  return {
    name: "column_partials",
    key: `r${rows}_c${cols}_${src}`,
    loops: COLUMN_CHUNK,
    workgroups: grid(Math.ceil((chunks * units) / 64)),
    code: `${input}
@group(0) @binding(1) var<storage, read_write> partial: array<${t}>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let u = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (u >= ${chunks * units}u) { return; }
  let c = u / ${units}u;
  let j = u % ${units}u;
  let end = min((c + 1u) * ${COLUMN_CHUNK}u, ${rows}u);
  var s = ${t}(0.0);
  for (var r = c * ${COLUMN_CHUNK}u; r < end; r++) { s += x(r * ${units}u + j); }
  partial[u] = s;
}`,
  };
}

/** out[j] = Σ_c partial[c, j] (chunks × cols partials). */
export function columnFinishKernel(chunks: number, cols: number): Kernel {
  const w = vectorWidth(cols);
  const t = floatType(w);
  const units = cols / w;
  return {
    name: "column_finish",
    key: `k${chunks}_c${cols}`,
    loops: chunks,
    workgroups: grid(Math.ceil(units / 64)),
    code: `@group(0) @binding(0) var<storage, read> partial: array<${t}>;
@group(0) @binding(1) var<storage, read_write> out: array<${t}>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let j = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (j >= ${units}u) { return; }
  var s = ${t}(0.0);
  for (var c = 0u; c < ${chunks}u; c++) { s += partial[c * ${units}u + j]; }
  out[j] = s;
}`,
  };
}

/** dx[i] = g[0] · x[i] / norm[0]: the gradient of ‖x‖₂. */
export function l2NormBackwardKernel(n: number): Kernel {
  return {
    name: "l2norm_backward",
    key: `n${n}`,
    loops: 0,
    workgroups: grid(Math.ceil(n / 64)),
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
