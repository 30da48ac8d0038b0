/**
 * RMSNorm (LLaMA's) over the last dimension (C) of `rows` rows: y = x · rsqrt(mean(x²) + eps) · w.
 * Two families, as for LayerNorm (layernorm.ts, layernorm_rows.ts): software kernels take one
 * invocation per row with no barriers; GPU kernels take one workgroup per row, each invocation every
 * threads-th unit of the row (coalesced loads), with a workgroup sum for the statistic. Both save
 * 1/rms per row for backward and share the dw partials kernel. Rows are read as vec4 when C divides
 * by 4.
 */
import {
  f32,
  floatInput,
  grid,
  type Kernel,
  type Source,
  vectorWidth,
  WGSL_GRID_PARAMS,
  WGSL_GROUP_INDEX,
} from "./kernel.ts";
import { rowHeader } from "./layernorm.ts";
import { COLUMN_CHUNK } from "./reduce.ts";
import { workgroupSum } from "./reduce_gpu.ts";

function rowInput(name: string, binding: number, c: number, src: Source): string {
  return floatInput("rmsnorm", name, binding, vectorWidth(c), src);
}

/** y = x · r · w with r = rsqrt(mean(x²) + eps); writes r per row. Bindings: x, weight, y, rstd. */
export function rmsNormForwardKernel(rows: number, c: number, eps: number, xs: Source = "storage"): Kernel {
  const { t, cu, hsum } = rowHeader(c);
  return {
    name: "rmsnorm_forward",
    key: `r${rows}_c${c}_e${eps}_${xs}`,
    loops: 2 * cu,
    workgroups: grid(Math.ceil(rows / 64)),
    code: `${hsum}
${rowInput("x", 0, c, xs)}
@group(0) @binding(1) var<storage, read> weight: array<${t}>;
@group(0) @binding(2) var<storage, read_write> y: array<${t}>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let r = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (r >= ${rows}u) { return; }
  let o = r * ${cu}u;
  var s = ${t}(0.0);
  for (var j = 0u; j < ${cu}u; j++) { let v = x(o + j); s += v * v; }
  let rs = inverseSqrt(hsum(s) / ${f32(c)} + ${f32(eps)});
  for (var j = 0u; j < ${cu}u; j++) { y[o + j] = x(o + j) * rs * weight[j]; }
  rstd[r] = rs;
}`,
  };
}

/** dx = r · (g − x̂ · mean(g · x̂)) with x̂ = x · r and g = dy · w. Bindings: x, weight, rstd, dy, dx. */
export function rmsNormBackwardKernel(
  rows: number,
  c: number,
  xs: Source = "storage",
  dys: Source = "storage",
): Kernel {
  const { t, cu, hsum } = rowHeader(c);
  return {
    name: "rmsnorm_backward",
    key: `r${rows}_c${c}_${xs}_${dys}`,
    loops: 2 * cu,
    workgroups: grid(Math.ceil(rows / 64)),
    code: `${hsum}
${rowInput("x", 0, c, xs)}
@group(0) @binding(1) var<storage, read> weight: array<${t}>;
@group(0) @binding(2) var<storage, read> rstd: array<f32>;
${rowInput("dy", 3, c, dys)}
@group(0) @binding(4) var<storage, read_write> dx: array<${t}>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let r = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (r >= ${rows}u) { return; }
  let o = r * ${cu}u;
  let rs = rstd[r];
  var b = ${t}(0.0);
  for (var j = 0u; j < ${cu}u; j++) { b += dy(o + j) * weight[j] * x(o + j); }
  let bm = hsum(b) * rs / ${f32(c)};
  for (var j = 0u; j < ${cu}u; j++) {
    let xh = x(o + j) * rs;
    dx[o + j] = rs * (dy(o + j) * weight[j] - xh * bm);
  }
}`,
  };
}

/**
 * Per chunk of rows: partial dw = Σ dy · x̂, laid out [chunks, C]; the column finish of
 * core/ops/reduce.ts sums the chunks. Bindings: x, rstd, dy, partials.
 */
export function rmsNormWeightPartialsKernel(
  rows: number,
  c: number,
  xs: Source = "storage",
  dys: Source = "storage",
): Kernel {
  const { t, cu } = rowHeader(c);
  const chunks = Math.ceil(rows / COLUMN_CHUNK);
  return {
    name: "rmsnorm_weight_partials",
    key: `r${rows}_c${c}_${xs}_${dys}`,
    loops: COLUMN_CHUNK,
    workgroups: grid(Math.ceil((chunks * cu) / 64)),
    code: `${rowInput("x", 0, c, xs)}
@group(0) @binding(1) var<storage, read> rstd: array<f32>;
${rowInput("dy", 2, c, dys)}
@group(0) @binding(3) var<storage, read_write> pweight: array<${t}>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let u = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (u >= ${chunks * cu}u) { return; }
  let k = u / ${cu}u;
  let j = u % ${cu}u;
  let end = min((k + 1u) * ${COLUMN_CHUNK}u, ${rows}u);
  var s = ${t}(0.0);
  for (var r = k * ${COLUMN_CHUNK}u; r < end; r++) {
    s += dy(r * ${cu}u + j) * x(r * ${cu}u + j) * rstd[r];
  }
  pweight[u] = s;
}`,
  };
}

/** GPU family of {@link rmsNormForwardKernel}: a workgroup of `threads` per row; same bindings. */
export function rmsNormForwardGpuKernel(
  rows: number,
  c: number,
  eps: number,
  threads: number,
  subgroups: boolean,
  xs: Source = "storage",
): Kernel {
  const { t, cu, hsum } = rowHeader(c);
  const red = workgroupSum("f32", threads, subgroups);
  const each = `for (var j = lid; j < ${cu}u; j += ${threads}u)`;
  return {
    name: "rmsnorm_forward_wg",
    key: `r${rows}_c${c}_e${eps}_t${threads}_sg${+subgroups}_${xs}`,
    loops: 2 * Math.ceil(cu / threads) + red.loops,
    workgroups: grid(rows),
    code: `${hsum}
${rowInput("x", 0, c, xs)}
@group(0) @binding(1) var<storage, read> weight: array<${t}>;
@group(0) @binding(2) var<storage, read_write> y: array<${t}>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;
${red.code}
@compute @workgroup_size(${threads})
fn main(${WGSL_GRID_PARAMS}${red.params}) {
  let r = ${WGSL_GROUP_INDEX};
  if (r >= ${rows}u) { return; }
  let o = r * ${cu}u;
  var s = ${t}(0.0);
  ${each} { let v = x(o + j); s += v * v; }
  let rs = inverseSqrt(${red.call("hsum(s)")} / ${f32(c)} + ${f32(eps)});
  ${each} { y[o + j] = x(o + j) * rs * weight[j]; }
  if (lid == 0u) { rstd[r] = rs; }
}`,
  };
}

/** GPU family of {@link rmsNormBackwardKernel}: a workgroup of `threads` per row; same bindings. */
export function rmsNormBackwardGpuKernel(
  rows: number,
  c: number,
  threads: number,
  subgroups: boolean,
  xs: Source = "storage",
  dys: Source = "storage",
): Kernel {
  const { t, cu, hsum } = rowHeader(c);
  const red = workgroupSum("f32", threads, subgroups);
  const each = `for (var j = lid; j < ${cu}u; j += ${threads}u)`;
  return {
    name: "rmsnorm_backward_wg",
    key: `r${rows}_c${c}_t${threads}_sg${+subgroups}_${xs}_${dys}`,
    loops: 2 * Math.ceil(cu / threads) + red.loops,
    workgroups: grid(rows),
    code: `${hsum}
${rowInput("x", 0, c, xs)}
@group(0) @binding(1) var<storage, read> weight: array<${t}>;
@group(0) @binding(2) var<storage, read> rstd: array<f32>;
${rowInput("dy", 3, c, dys)}
@group(0) @binding(4) var<storage, read_write> dx: array<${t}>;
${red.code}
@compute @workgroup_size(${threads})
fn main(${WGSL_GRID_PARAMS}${red.params}) {
  let r = ${WGSL_GROUP_INDEX};
  if (r >= ${rows}u) { return; }
  let o = r * ${cu}u;
  let rs = rstd[r];
  var b = ${t}(0.0);
  ${each} { b += dy(o + j) * weight[j] * x(o + j); }
  let bm = ${red.call("hsum(b)")} * rs / ${f32(c)};
  ${each} {
    let xh = x(o + j) * rs;
    dx[o + j] = rs * (dy(o + j) * weight[j] - xh * bm);
  }
}`,
  };
}
