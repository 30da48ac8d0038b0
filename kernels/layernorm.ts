/**
 * LayerNorm over the last dimension (C) of `rows` rows. One thread per row: no workgroup barriers,
 * which software adapters execute slowly. Mean and 1/σ are saved for backward.
 */
import { f32, type Kernel, WGSL_GRID_PARAMS, WGSL_GROUP_INDEX } from "./kernel.ts";
import { COLUMN_CHUNK } from "./reduce.ts";

/** y = (x − μ)/σ · γ + β; writes μ and 1/σ per row. */
export function layerNormForwardKernel(rows: number, c: number, eps: number): Kernel {
  return {
    name: "layernorm_forward",
    key: `r${rows}_c${c}_e${eps}`,
    code: `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let r = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (r >= ${rows}u) { return; }
  let o = r * ${c}u;
  var s = 0.0;
  for (var j = 0u; j < ${c}u; j++) { s += x[o + j]; }
  let m = s / ${f32(c)};
  var v = 0.0;
  for (var j = 0u; j < ${c}u; j++) { let d = x[o + j] - m; v += d * d; }
  let rs = inverseSqrt(v / ${f32(c)} + ${f32(eps)});
  for (var j = 0u; j < ${c}u; j++) { y[o + j] = (x[o + j] - m) * rs * gamma[j] + beta[j]; }
  mean[r] = m;
  rstd[r] = rs;
}`,
  };
}

/** dx = (1/σ)·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)) with dx̂ = dy·γ. */
export function layerNormBackwardKernel(rows: number, c: number): Kernel {
  return {
    name: "layernorm_backward",
    key: `r${rows}_c${c}`,
    code: `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> rstd: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let r = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (r >= ${rows}u) { return; }
  let o = r * ${c}u;
  let m = mean[r];
  let rs = rstd[r];
  var a = 0.0;
  var b = 0.0;
  for (var j = 0u; j < ${c}u; j++) {
    let g = dy[o + j] * gamma[j];
    a += g;
    b += g * (x[o + j] - m) * rs;
  }
  a = a / ${f32(c)};
  b = b / ${f32(c)};
  for (var j = 0u; j < ${c}u; j++) {
    let xh = (x[o + j] - m) * rs;
    dx[o + j] = rs * (dy[o + j] * gamma[j] - a - xh * b);
  }
}`,
  };
}

/**
 * Per chunk of rows: partial dγ = Σ dy·x̂ and dβ = Σ dy, laid out [chunks, C] each; the column
 * finish kernel of reduce.ts sums the chunks.
 */
export function layerNormParamPartialsKernel(rows: number, c: number): Kernel {
  const chunks = Math.ceil(rows / COLUMN_CHUNK);
  return {
    name: "layernorm_param_partials",
    key: `r${rows}_c${c}`,
    code: `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> mean: array<f32>;
@group(0) @binding(2) var<storage, read> rstd: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> pgamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> pbeta: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let t = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (t >= ${chunks * c}u) { return; }
  let k = t / ${c}u;
  let j = t % ${c}u;
  let end = min((k + 1u) * ${COLUMN_CHUNK}u, ${rows}u);
  var sg = 0.0;
  var sb = 0.0;
  for (var r = k * ${COLUMN_CHUNK}u; r < end; r++) {
    let d = dy[r * ${c}u + j];
    sg += d * (x[r * ${c}u + j] - mean[r]) * rstd[r];
    sb += d;
  }
  pgamma[t] = sg;
  pbeta[t] = sb;
}`,
  };
}
