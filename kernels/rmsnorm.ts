/**
 * RMSNorm (LLaMA's) over the last dimension (C) of `rows` rows: y = x · rsqrt(mean(x²) + eps) · w.
 * Two families, as for LayerNorm (layernorm.ts, layernorm_rows.ts): software kernels take one
 * invocation per row with no barriers; GPU kernels take one workgroup per row, each invocation every
 * threads-th unit of the row (coalesced loads), with a workgroup sum for the statistic. Each
 * direction's math is written once against a `RowFamily` that supplies the loop and the sum. Both
 * save 1/rms per row for backward and share the dw partials kernel. Rows are read as vec4 when C
 * divides by 4.
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

/**
 * How a row kernel of either family walks its row: software (`threads` null) one invocation per row
 * of 64 per workgroup, each unit in turn; GPU one workgroup of `threads` per row, each invocation
 * every threads-th unit, with a workgroup sum. The math is written once against this.
 */
interface RowFamily {
  /** Kernel name suffix and key part. */
  name: string;
  key: string;
  /** WGSL before main (the workgroup sum), main's extra parameters, the workgroup size. */
  code: string;
  params: string;
  size: number;
  /** The row this invocation serves. */
  row: string;
  /** A loop over this invocation's units of the row, binding `j`. */
  each: string;
  /** The row's total of a per-invocation partial sum. */
  sum: (v: string) => string;
  /** Loop iterations of `passes` passes over the row, the sum's included. */
  loops: (passes: number) => number;
  /** Guard so only one invocation writes a per-row value. */
  once: string;
  workgroups: (rows: number) => Kernel["workgroups"];
}

function rowFamily(cu: number, threads: number | null, subgroups = false): RowFamily {
  if (threads === null) {
    return {
      name: "",
      key: "",
      code: "",
      params: "",
      size: 64,
      row: `${WGSL_GROUP_INDEX} * 64u + lid`,
      each: `for (var j = 0u; j < ${cu}u; j++)`,
      sum: (v) => `hsum(${v})`,
      loops: (passes) => passes * cu,
      once: "",
      workgroups: (rows) => grid(Math.ceil(rows / 64)),
    };
  }
  const red = workgroupSum("f32", threads, subgroups);
  return {
    name: "_wg",
    key: `_t${threads}_sg${+subgroups}`,
    code: red.code,
    params: red.params,
    size: threads,
    row: WGSL_GROUP_INDEX,
    each: `for (var j = lid; j < ${cu}u; j += ${threads}u)`,
    sum: (v) => red.call(`hsum(${v})`),
    loops: (passes) => passes * Math.ceil(cu / threads) + red.loops,
    once: "if (lid == 0u) ",
    workgroups: (rows) => grid(rows),
  };
}

function forward(
  rows: number,
  c: number,
  eps: number,
  xs: Source,
  f: RowFamily,
  cu: number,
  t: string,
  hsum: string,
): Kernel {
  return {
    name: `rmsnorm_forward${f.name}`,
    key: `r${rows}_c${c}_e${eps}${f.key}_${xs}`,
    loops: f.loops(2),
    workgroups: f.workgroups(rows),
    code: `${hsum}
${rowInput("x", 0, c, xs)}
@group(0) @binding(1) var<storage, read> weight: array<${t}>;
@group(0) @binding(2) var<storage, read_write> y: array<${t}>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;
${f.code}
@compute @workgroup_size(${f.size})
fn main(${WGSL_GRID_PARAMS}${f.params}) {
  let r = ${f.row};
  if (r >= ${rows}u) { return; }
  let o = r * ${cu}u;
  var s = ${t}(0.0);
  ${f.each} { let v = x(o + j); s += v * v; }
  let rs = inverseSqrt(${f.sum("s")} / ${f32(c)} + ${f32(eps)});
  ${f.each} { y[o + j] = x(o + j) * rs * weight[j]; }
  ${f.once}{ rstd[r] = rs; }
}`,
  };
}

function backward(
  rows: number,
  c: number,
  xs: Source,
  dys: Source,
  f: RowFamily,
  cu: number,
  t: string,
  hsum: string,
): Kernel {
  return {
    name: `rmsnorm_backward${f.name}`,
    key: `r${rows}_c${c}${f.key}_${xs}_${dys}`,
    loops: f.loops(2),
    workgroups: f.workgroups(rows),
    code: `${hsum}
${rowInput("x", 0, c, xs)}
@group(0) @binding(1) var<storage, read> weight: array<${t}>;
@group(0) @binding(2) var<storage, read> rstd: array<f32>;
${rowInput("dy", 3, c, dys)}
@group(0) @binding(4) var<storage, read_write> dx: array<${t}>;
${f.code}
@compute @workgroup_size(${f.size})
fn main(${WGSL_GRID_PARAMS}${f.params}) {
  let r = ${f.row};
  if (r >= ${rows}u) { return; }
  let o = r * ${cu}u;
  let rs = rstd[r];
  var b = ${t}(0.0);
  ${f.each} { b += dy(o + j) * weight[j] * x(o + j); }
  let bm = ${f.sum("b")} * rs / ${f32(c)};
  ${f.each} {
    let xh = x(o + j) * rs;
    dx[o + j] = rs * (dy(o + j) * weight[j] - xh * bm);
  }
}`,
  };
}

/** y = x · r · w with r = rsqrt(mean(x²) + eps); writes r per row. Bindings: x, weight, y, rstd. */
export function rmsNormForwardKernel(rows: number, c: number, eps: number, xs: Source = "storage"): Kernel {
  const { t, cu, hsum } = rowHeader(c);
  return forward(rows, c, eps, xs, rowFamily(cu, null), cu, t, hsum);
}

/** dx = r · (g − x̂ · mean(g · x̂)) with x̂ = x · r and g = dy · w. Bindings: x, weight, rstd, dy, dx. */
export function rmsNormBackwardKernel(
  rows: number,
  c: number,
  xs: Source = "storage",
  dys: Source = "storage",
): Kernel {
  const { t, cu, hsum } = rowHeader(c);
  return backward(rows, c, xs, dys, rowFamily(cu, null), cu, t, hsum);
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
  return forward(rows, c, eps, xs, rowFamily(cu, threads, subgroups), cu, t, hsum);
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
  return backward(rows, c, xs, dys, rowFamily(cu, threads, subgroups), cu, t, hsum);
}
