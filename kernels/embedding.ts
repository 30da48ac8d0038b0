/**
 * Embedding lookup and its deterministic backward: rows are gathered forward; backward sums, for
 * each distinct token, its positions' gradients in a fixed order (positions grouped by token on the
 * host, CSR-style), so no float atomics and the same result every run.
 */
import { grid, type Kernel, WGSL_GRID_PARAMS, WGSL_GROUP_INDEX } from "./kernel.ts";

/** out[n, :] = table[ids[n], :]; an id ≥ V gives NaN rows. */
export function embeddingForwardKernel(n: number, v: number, d: number): Kernel {
  return {
    name: "embedding_forward",
    key: `n${n}_v${v}_d${d}`,
    loops: 0,
    workgroups: grid(Math.ceil(n * d / 64)),
    code: `@group(0) @binding(0) var<storage, read> table: array<f32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let i = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (i >= ${n * d}u) { return; }
  let id = ids[i / ${d}u];
  if (id < ${v}u) { out[i] = table[id * ${d}u + i % ${d}u]; } else { out[i] = bitcast<f32>(0x7fc00000u); }
}`,
  };
}

/**
 * dtable[tokens[u], j] = Σ dy[order[p], j] for p in [start[u], start[u+1]): `u` distinct tokens;
 * other rows of dtable must be zeroed beforehand. `maxRun` bounds the positions of any one token.
 */
export function embeddingBackwardKernel(u: number, d: number, maxRun: number): Kernel {
  return {
    name: "embedding_backward",
    key: `u${u}_d${d}`,
    loops: maxRun,
    workgroups: grid(Math.ceil(u * d / 64)),
    code: `@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> order: array<u32>;
@group(0) @binding(2) var<storage, read> start: array<u32>;
@group(0) @binding(3) var<storage, read> tokens: array<u32>;
@group(0) @binding(4) var<storage, read_write> dtable: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let i = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (i >= ${u * d}u) { return; }
  let k = i / ${d}u;
  let j = i % ${d}u;
  var s = 0.0;
  for (var p = start[k]; p < start[k + 1u]; p++) { s += dy[order[p] * ${d}u + j]; }
  dtable[tokens[k] * ${d}u + j] = s;
}`,
  };
}
