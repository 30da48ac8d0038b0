/**
 * Softmax + cross-entropy over rows of logits with a per-row weight (the loss mask): loss =
 * Σ m·(lse − x[target]) / Σ m. A target outside [0, V) on a counted row gives NaN, never a number.
 * One thread per row (see layernorm.ts for why).
 */
import { type Kernel, WGSL_GRID_PARAMS, WGSL_GROUP_INDEX } from "./kernel.ts";

/** Per row: lse[n] and rowloss[n] = m[n]·(lse − x[n, t[n]]). */
export function xentRowsKernel(rows: number, v: number): Kernel {
  return {
    name: "xent_rows",
    key: `r${rows}_v${v}`,
    code: `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> tgt: array<u32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> rowloss: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let r = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (r >= ${rows}u) { return; }
  let o = r * ${v}u;
  var mx = x[o];
  for (var j = 1u; j < ${v}u; j++) { mx = max(mx, x[o + j]); }
  var s = 0.0;
  for (var j = 0u; j < ${v}u; j++) { s += exp(x[o + j] - mx); }
  let l = mx + log(s);
  lse[r] = l;
  let t = tgt[r];
  let m = mask[r];
  var loss = 0.0;
  if (m != 0.0) {
    if (t < ${v}u) { loss = m * (l - x[o + t]); } else { loss = bitcast<f32>(0x7fc00000u); }
  }
  rowloss[r] = loss;
}`,
  };
}

/** loss[0] = Σ rowloss / Σ m (0 when Σ m = 0); scale[0] = 1/Σ m (or 0) for backward. */
export function xentFinishKernel(rows: number): Kernel {
  return {
    name: "xent_finish",
    key: `r${rows}`,
    code: `@group(0) @binding(0) var<storage, read> rowloss: array<f32>;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> scale: array<f32>;
@compute @workgroup_size(1)
fn main() {
  var s = 0.0;
  var w = 0.0;
  for (var r = 0u; r < ${rows}u; r++) { s += rowloss[r]; w += mask[r]; }
  var inv = 0.0;
  if (w != 0.0) { inv = 1.0 / w; }
  loss[0] = s * inv;
  scale[0] = inv;
}`,
  };
}

/**
 * dx[n, j] = g·scale·m[n]·(softmax(x[n])[j] − [j = t[n]]); with `inPlace`, dx overwrites x (the
 * chunked LM head recomputes logits and needs no second buffer).
 */
export function xentBackwardKernel(rows: number, v: number, inPlace = false): Kernel {
  return {
    name: "xent_backward",
    key: `r${rows}_v${v}_inplace${+inPlace}`,
    code: `@group(0) @binding(0) var<storage, ${inPlace ? "read_write" : "read"}> x: array<f32>;
@group(0) @binding(1) var<storage, read> tgt: array<u32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read> scale: array<f32>;
@group(0) @binding(5) var<storage, read> g: array<f32>;
${inPlace ? "" : "@group(0) @binding(6) var<storage, read_write> dx: array<f32>;"}
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let i = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (i >= ${rows * v}u) { return; }
  let r = i / ${v}u;
  let j = i % ${v}u;
  let w = g[0] * scale[0] * mask[r];
  var d = exp(x[i] - lse[r]);
  if (j == tgt[r]) { d -= 1.0; }
  ${inPlace ? "x" : "dx"}[i] = w * d;
}`,
  };
}
