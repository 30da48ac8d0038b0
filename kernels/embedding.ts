/**
 * Embedding lookup and its deterministic backward: rows are gathered forward; backward sums, for
 * each distinct token, its positions' gradients in a fixed order (positions grouped by token on the
 * host, CSR-style), so no float atomics and the same result every run. A token with more positions
 * than one invocation may sum is split into runs summed in passes (see core/ops/embedding.ts).
 */
import { grid, type Kernel, WGSL_GRID_PARAMS, WGSL_GROUP_INDEX } from "./kernel.ts";

/**
 * out[n, :] = table[ids[n], :]; an id ≥ V gives NaN rows. (The NaN's bits are OR-ed with a runtime
 * zero: Chrome's WGSL compiler rejects a NaN made from constants alone.)
 */
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
  if (id < ${v}u) { out[i] = table[id * ${d}u + i % ${d}u]; } else { out[i] = bitcast<f32>(0x7fc00000u | (id & 0u)); }
}`,
  };
}

/**
 * One backward pass: out[row(k), j] = Σ src[at(p), j] for p in [start[k], start[k+1]), k < `u`,
 * where at(p) = order[p] when `gather` (else p) and row(k) = tokens[k] when `scatter` (else k).
 * The first pass gathers positions' gradients, the last scatters into dtable (whose other rows
 * must be zeroed beforehand); passes between sum partial rows, so a token's positions can be split
 * into runs of at most `maxRun`, the most rows any k sums. Bindings: src, (order), start, (tokens), out.
 * `u` (the length of `start` less one) is read from the binding, not baked in: it changes with
 * every batch, and a pipeline per batch would cost a compile per step.
 */
export function embeddingBackwardKernel(
  u: number,
  d: number,
  maxRun: number,
  gather = true,
  scatter = true,
): Kernel {
  const bindings = [
    "src: array<f32>",
    ...(gather ? ["order: array<u32>"] : []),
    "start: array<u32>",
    ...(scatter ? ["tokens: array<u32>"] : []),
  ].map((decl, i) => `@group(0) @binding(${i}) var<storage, read> ${decl};`);
  return {
    name: "embedding_backward",
    key: `d${d}_g${+gather}_s${+scatter}`,
    loops: maxRun,
    workgroups: grid(Math.ceil(u * d / 64)),
    code: `${bindings.join("\n")}
@group(0) @binding(${bindings.length}) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let i = ${WGSL_GROUP_INDEX} * 64u + lid;
  let k = i / ${d}u;
  if (k + 1u >= arrayLength(&start)) { return; }
  let j = i % ${d}u;
  var s = 0.0;
  for (var p = start[k]; p < start[k + 1u]; p++) { s += src[${gather ? "order[p]" : "p"} * ${d}u + j]; }
  out[${scatter ? "tokens[k]" : "k"} * ${d}u + j] = s;
}`,
  };
}
