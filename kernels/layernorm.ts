/**
 * LayerNorm over the last dimension (C) of `rows` rows, software family: one invocation per row, no
 * workgroup barriers (which software adapters execute slowly); rows are read as vec4 when C divides
 * by 4. Mean and 1/σ are saved for backward. The GPU family's workgroup-per-row kernels are in
 * layernorm_rows.ts; both use the dγ/dβ partials here.
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
import { COLUMN_CHUNK } from "./reduce.ts";

/** Input `name` at `binding` read as name(i): vec4 units from `src`, or a plain f32 array. */
export function rowInput(name: string, binding: number, c: number, src: Source): string {
  return floatInput("layernorm", name, binding, vectorWidth(c), src);
}

/** The row's WGSL type, its length in units and `fn hsum` adding a unit's lanes. */
export function rowHeader(c: number): { t: string; cu: number; hsum: string } {
  const w = vectorWidth(c);
  const t = floatType(w);
  return {
    t,
    cu: c / w,
    hsum: w === 4
      ? "fn hsum(v: vec4<f32>) -> f32 { return v.x + v.y + v.z + v.w; }"
      : "fn hsum(v: f32) -> f32 { return v; }",
  };
}

/** y = (x − μ)/σ · γ + β; writes μ and 1/σ per row. */
export function layerNormForwardKernel(rows: number, c: number, eps: number, xs: Source = "storage"): Kernel {
  const { t, cu, hsum } = rowHeader(c);
  return {
    name: "layernorm_forward",
    key: `r${rows}_c${c}_e${eps}_${xs}`,
    loops: 3 * cu,
    workgroups: grid(Math.ceil(rows / 64)),
    code: `${hsum}
${rowInput("x", 0, c, xs)}
@group(0) @binding(1) var<storage, read> gamma: array<${t}>;
@group(0) @binding(2) var<storage, read> beta: array<${t}>;
@group(0) @binding(3) var<storage, read_write> y: array<${t}>;
@group(0) @binding(4) var<storage, read_write> mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let r = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (r >= ${rows}u) { return; }
  let o = r * ${cu}u;
  var s = ${t}(0.0);
  for (var j = 0u; j < ${cu}u; j++) { s += x(o + j); }
  let m = hsum(s) / ${f32(c)};
  var v = ${t}(0.0);
  for (var j = 0u; j < ${cu}u; j++) { let d = x(o + j) - m; v += d * d; }
  let rs = inverseSqrt(hsum(v) / ${f32(c)} + ${f32(eps)});
  for (var j = 0u; j < ${cu}u; j++) { y[o + j] = (x(o + j) - m) * rs * gamma[j] + beta[j]; }
  mean[r] = m;
  rstd[r] = rs;
}`,
  };
}

/** dx = (1/σ)·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)) with dx̂ = dy·γ. */
export function layerNormBackwardKernel(
  rows: number,
  c: number,
  xs: Source = "storage",
  dys: Source = "storage",
): Kernel {
  const { t, cu, hsum } = rowHeader(c);
  return {
    name: "layernorm_backward",
    key: `r${rows}_c${c}_${xs}_${dys}`,
    loops: 2 * cu,
    workgroups: grid(Math.ceil(rows / 64)),
    code: `${hsum}
${rowInput("x", 0, c, xs)}
@group(0) @binding(1) var<storage, read> gamma: array<${t}>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> rstd: array<f32>;
${rowInput("dy", 4, c, dys)}
@group(0) @binding(5) var<storage, read_write> dx: array<${t}>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let r = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (r >= ${rows}u) { return; }
  let o = r * ${cu}u;
  let m = mean[r];
  let rs = rstd[r];
  var a = ${t}(0.0);
  var b = ${t}(0.0);
  for (var j = 0u; j < ${cu}u; j++) {
    let g = dy(o + j) * gamma[j];
    a += g;
    b += g * (x(o + j) - m) * rs;
  }
  let am = hsum(a) / ${f32(c)};
  let bm = hsum(b) / ${f32(c)};
  for (var j = 0u; j < ${cu}u; j++) {
    let xh = (x(o + j) - m) * rs;
    dx[o + j] = rs * (dy(o + j) * gamma[j] - am - xh * bm);
  }
}`,
  };
}

/**
 * Per chunk of rows: partial dγ = Σ dy·x̂ and dβ = Σ dy, laid out [chunks, C] each; the column
 * finish kernel of reduce.ts sums the chunks.
 */
export function layerNormParamPartialsKernel(
  rows: number,
  c: number,
  xs: Source = "storage",
  dys: Source = "storage",
): Kernel {
  const { t, cu } = rowHeader(c);
  const chunks = Math.ceil(rows / COLUMN_CHUNK);
  return {
    name: "layernorm_param_partials",
    key: `r${rows}_c${c}_${xs}_${dys}`,
    loops: COLUMN_CHUNK,
    workgroups: grid(Math.ceil((chunks * cu) / 64)),
    code: `${rowInput("x", 0, c, xs)}
@group(0) @binding(1) var<storage, read> mean: array<f32>;
@group(0) @binding(2) var<storage, read> rstd: array<f32>;
${rowInput("dy", 3, c, dys)}
@group(0) @binding(4) var<storage, read_write> pgamma: array<${t}>;
@group(0) @binding(5) var<storage, read_write> pbeta: array<${t}>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let u = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (u >= ${chunks * cu}u) { return; }
  let k = u / ${cu}u;
  let j = u % ${cu}u;
  let end = min((k + 1u) * ${COLUMN_CHUNK}u, ${rows}u);
  var sg = ${t}(0.0);
  var sb = ${t}(0.0);
  for (var r = k * ${COLUMN_CHUNK}u; r < end; r++) {
    let d = dy(r * ${cu}u + j);
    sg += d * (x(r * ${cu}u + j) - mean[r]) * rstd[r];
    sb += d;
  }
  pgamma[u] = sg;
  pbeta[u] = sb;
}`,
  };
}
