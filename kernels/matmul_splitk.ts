/**
 * The second half of a split-K matmul: the tiled kernel leaves one partial product per K range in a
 * workspace [splits, batch, M, N]; this kernel sums them in split order (deterministic: the same
 * inputs give the same bits) and adds the bias once.
 */
import { floatType, grid, type Kernel, vectorWidth, WGSL_GRID_PARAMS, WGSL_GROUP_INDEX } from "./kernel.ts";
import { matmulKey, type MatmulShape } from "./matmul.ts";

const WG = 256;

/** Sums `splits` partials of `s` into C (binding 0: partials, 1: C, 2: bias when `s.bias`). */
export function matmulSplitReduceKernel(s: MatmulShape, splits: number): Kernel {
  const w = vectorWidth(s.n);
  const size = (s.batch * s.m * s.n) / w;
  return {
    name: "matmul_splitk_reduce",
    key: `${matmulKey(s)}_S${splits}`,
    loops: splits - 1,
    workgroups: grid(Math.ceil(size / WG)),
    code: `@group(0) @binding(0) var<storage, read> parts: array<${floatType(w)}>;
@group(0) @binding(1) var<storage, read_write> cm: array<${floatType(w)}>;
${s.bias ? `@group(0) @binding(2) var<storage, read> bias: array<${floatType(w)}>;` : ""}
@compute @workgroup_size(${WG})
fn main(${WGSL_GRID_PARAMS}) {
  let i = ${WGSL_GROUP_INDEX} * ${WG}u + lid;
  if (i >= ${size}u) { return; }
  var acc = parts[i];
  for (var p = 1u; p < ${splits}u; p++) { acc += parts[p * ${size}u + i]; }
  cm[i] = acc${s.bias ? ` + bias[i % ${s.n / w}u]` : ""};
}`,
  };
}
