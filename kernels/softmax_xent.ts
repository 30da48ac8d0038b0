/**
 * Softmax + cross-entropy over rows of logits with a per-row weight (the loss mask): loss =
 * Σ m·(lse − x[target]) / Σ m. A target outside [0, V) on a counted row gives NaN, never a number.
 * One thread per row in the forward (see layernorm.ts for why), one per vec4 of logits in the
 * backward; rows are read as vec4 when V divides by 4.
 */
import {
  floatInput,
  floatType,
  grid,
  type Kernel,
  type Source,
  vectorWidth,
  WGSL_GRID_PARAMS,
  WGSL_GROUP_INDEX,
} from "./kernel.ts";

/** Per row: lse[n] and rowloss[n] = m[n]·(lse − x[n, t[n]]). Bindings: x, targets, mask, lse, rowloss. */
export function xentRowsKernel(rows: number, v: number, src: Source = "storage"): Kernel {
  const w = vectorWidth(v);
  const vu = v / w;
  const max = w === 4 ? "max(max(u.x, u.y), max(u.z, u.w))" : "u";
  const sum = w === 4 ? "e.x + e.y + e.z + e.w" : "e";
  const at = w === 4 ? "x((o * 4u + tg) / 4u)[tg % 4u]" : "x(o + tg)";
  return {
    name: "xent_rows",
    key: `r${rows}_v${v}_${src}`,
    loops: 2 * vu,
    workgroups: grid(Math.ceil(rows / 64)),
    code: `${floatInput("xent_rows", "x", 0, w, src)}
@group(0) @binding(1) var<storage, read> tgt: array<u32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> rowloss: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let r = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (r >= ${rows}u) { return; }
  let o = r * ${vu}u;
  var mx = -3.0e38;
  for (var j = 0u; j < ${vu}u; j++) { let u = x(o + j); mx = max(mx, ${max}); }
  var s = 0.0;
  for (var j = 0u; j < ${vu}u; j++) { let e = exp(x(o + j) - mx); s += ${sum}; }
  let l = mx + log(s);
  lse[r] = l;
  let tg = tgt[r];
  let m = mask[r];
  var loss = 0.0;
  if (m != 0.0) {
    if (tg < ${v}u) { loss = m * (l - ${at}); } else { loss = bitcast<f32>(0x7fc00000u); }
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
    loops: rows,
    workgroups: [1],
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
 * chunked LM head recomputes logits and needs no second buffer). Bindings: x, targets, mask, lse,
 * scale, g, (dx).
 */
export function xentBackwardKernel(
  rows: number,
  v: number,
  inPlace = false,
  src: Source = "storage",
): Kernel {
  const w = vectorWidth(v);
  const t = floatType(w);
  if (inPlace && src !== "storage") throw new Error("xent_backward: in place reads the buffer it writes");
  const vu = v / w;
  const hit = w === 4
    ? `let k = i32(tgt[r]) - i32(j * 4u);
  if (k >= 0 && k < 4) { d[k] -= 1.0; }`
    : `if (j == tgt[r]) { d -= 1.0; }`;
  return {
    name: "xent_backward",
    key: `r${rows}_v${v}_inplace${+inPlace}_${src}`,
    loops: 0,
    workgroups: grid(Math.ceil((rows * vu) / 64)),
    code: `${
      inPlace
        ? `@group(0) @binding(0) var<storage, read_write> x_b: array<${t}>;
fn x(i: u32) -> ${t} { return x_b[i]; }`
        : floatInput("xent_backward", "x", 0, w, src)
    }
@group(0) @binding(1) var<storage, read> tgt: array<u32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read> scale: array<f32>;
@group(0) @binding(5) var<storage, read> g: array<f32>;
${inPlace ? "" : `@group(0) @binding(6) var<storage, read_write> dx: array<${t}>;`}
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let i = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (i >= ${rows * vu}u) { return; }
  let r = i / ${vu}u;
  let j = i % ${vu}u;
  let wgt = g[0] * scale[0] * mask[r];
  var d = exp(x(i) - lse[r]);
  ${hit}
  ${inPlace ? "x_b" : "dx"}[i] = wgt * d;
}`,
  };
}
