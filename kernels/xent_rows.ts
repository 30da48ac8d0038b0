/**
 * The GPU family's cross-entropy forward: one workgroup per row. Each invocation runs an online
 * softmax (running max, Σ exp rescaled when the max grows) over every threads-th unit of the row, so
 * the row is read once with coalesced loads, then the workgroup combines the (max, Σexp) pairs.
 * Writes lse and the row loss exactly as the software kernels of softmax_xent.ts do.
 */
import {
  floatInput,
  grid,
  type Kernel,
  type Source,
  vectorWidth,
  WGSL_GRID_PARAMS,
  WGSL_GROUP_INDEX,
} from "./kernel.ts";
import { workgroupMaxSum } from "./reduce_gpu.ts";
import { xentRowBindings, xentRowStore } from "./softmax_xent.ts";

/**
 * lse[n] and rowloss[n] = m[n]·(lse − x[n, t[n]]), one workgroup of `threads` (a power of two) per
 * row. Bindings: x, targets, mask, lse, rowloss.
 */
export function xentRowsGpuKernel(
  rows: number,
  v: number,
  threads: number,
  subgroups: boolean,
  src: Source = "storage",
): Kernel {
  const w = vectorWidth(v);
  const vu = v / w;
  const red = workgroupMaxSum(threads, subgroups);
  return {
    name: "xent_rows_wg",
    key: `r${rows}_v${v}_t${threads}_sg${+subgroups}_${src}`,
    loops: Math.ceil(vu / threads) + red.loops,
    workgroups: grid(rows),
    code: `${floatInput("xent_rows_wg", "x", 0, w, src)}
${xentRowBindings(1)}
${red.code}
@compute @workgroup_size(${threads})
fn main(${WGSL_GRID_PARAMS}${red.params}) {
  let r = ${WGSL_GROUP_INDEX};
  if (r >= ${rows}u) { return; }
  let o = r * ${vu}u;
  var mx = -3.0e38;
  var s = 0.0;
  for (var j = lid; j < ${vu}u; j += ${threads}u) {
    let u = x(o + j);
    let nm = max(mx, ${w === 4 ? "max(max(u.x, u.y), max(u.z, u.w))" : "u"});
    let e = exp(u - nm);
    s = s * exp(mx - nm) + ${w === 4 ? "e.x + e.y + e.z + e.w" : "e"};
    mx = nm;
  }
  let t = ${red.call("vec2<f32>(mx, s)")};
  if (lid == 0u) {
    let l = t.x + log(t.y);
    ${xentRowStore(v)}
  }
}`,
  };
}
