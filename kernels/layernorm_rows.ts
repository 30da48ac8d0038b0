/**
 * LayerNorm, GPU family: one workgroup per row, each invocation taking every threads-th unit of
 * the row (coalesced loads), with workgroup sums for the statistics. Same bindings and outputs as
 * the one-invocation-per-row kernels of layernorm.ts.
 */
import { f32, grid, type Kernel, type Source, WGSL_GRID_PARAMS, WGSL_GROUP_INDEX } from "./kernel.ts";
import { rowHeader, rowInput } from "./layernorm.ts";
import { workgroupSum } from "./reduce_gpu.ts";

/** y = (x − μ)/σ · γ + β; writes μ and 1/σ per row. Bindings: x, gamma, beta, y, mean, rstd. */
export function layerNormForwardGpuKernel(
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
    name: "layernorm_forward_wg",
    key: `r${rows}_c${c}_e${eps}_t${threads}_sg${+subgroups}_${xs}`,
    loops: 3 * Math.ceil(cu / threads) + 2 * red.loops,
    workgroups: grid(rows),
    code: `${hsum}
${rowInput("x", 0, c, xs)}
@group(0) @binding(1) var<storage, read> gamma: array<${t}>;
@group(0) @binding(2) var<storage, read> beta: array<${t}>;
@group(0) @binding(3) var<storage, read_write> y: array<${t}>;
@group(0) @binding(4) var<storage, read_write> mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;
${red.code}
@compute @workgroup_size(${threads})
fn main(${WGSL_GRID_PARAMS}${red.params}) {
  let r = ${WGSL_GROUP_INDEX};
  if (r >= ${rows}u) { return; }
  let o = r * ${cu}u;
  var s = ${t}(0.0);
  ${each} { s += x(o + j); }
  let m = ${red.call("hsum(s)")} / ${f32(c)};
  var v = ${t}(0.0);
  ${each} { let d = x(o + j) - m; v += d * d; }
  let rs = inverseSqrt(${red.call("hsum(v)")} / ${f32(c)} + ${f32(eps)});
  ${each} { y[o + j] = (x(o + j) - m) * rs * gamma[j] + beta[j]; }
  if (lid == 0u) {
    mean[r] = m;
    rstd[r] = rs;
  }
}`,
  };
}

/**
 * dx = (1/σ)·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)) with dx̂ = dy·γ; both means from one workgroup sum.
 * Bindings: x, gamma, mean, rstd, dy, dx.
 */
export function layerNormBackwardGpuKernel(
  rows: number,
  c: number,
  threads: number,
  subgroups: boolean,
  xs: Source = "storage",
  dys: Source = "storage",
): Kernel {
  const { t, cu, hsum } = rowHeader(c);
  const red = workgroupSum("vec2<f32>", threads, subgroups);
  const each = `for (var j = lid; j < ${cu}u; j += ${threads}u)`;
  return {
    name: "layernorm_backward_wg",
    key: `r${rows}_c${c}_t${threads}_sg${+subgroups}_${xs}_${dys}`,
    loops: 2 * Math.ceil(cu / threads) + red.loops,
    workgroups: grid(rows),
    code: `${hsum}
${rowInput("x", 0, c, xs)}
@group(0) @binding(1) var<storage, read> gamma: array<${t}>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> rstd: array<f32>;
${rowInput("dy", 4, c, dys)}
@group(0) @binding(5) var<storage, read_write> dx: array<${t}>;
${red.code}
@compute @workgroup_size(${threads})
fn main(${WGSL_GRID_PARAMS}${red.params}) {
  let r = ${WGSL_GROUP_INDEX};
  if (r >= ${rows}u) { return; }
  let o = r * ${cu}u;
  let m = mean[r];
  let rs = rstd[r];
  var a = ${t}(0.0);
  var b = ${t}(0.0);
  ${each} {
    let g = dy(o + j) * gamma[j];
    a += g;
    b += g * (x(o + j) - m) * rs;
  }
  let ab = ${red.call("vec2<f32>(hsum(a), hsum(b))")} / ${f32(c)};
  ${each} {
    let xh = (x(o + j) - m) * rs;
    dx[o + j] = rs * (dy(o + j) * gamma[j] - ab.x - xh * ab.y);
  }
}`,
  };
}
