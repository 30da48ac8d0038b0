/**
 * Softmax + cross-entropy over rows of logits with a per-row weight (the loss mask): loss =
 * Σ m·(lse − x[target]) / Σ m. A target outside [0, V) on a counted row gives NaN, never a number.
 * The forward writes per row lse and the row loss m·(lse − x[target]); rows are read as vec4 when V
 * divides by 4. Software family: one invocation per row while the row is short, else one per (row,
 * span of the row) and a combine per row, so no invocation loops over the whole vocabulary; the
 * GPU family's workgroup-per-row forward is in xent_rows.ts. The finish (Σ row losses / Σ m) is a
 * sum (reduce.ts); the backward is one invocation per vec4 of logits.
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
import type { SumInput, SumOutput } from "./reduce.ts";

/** WGSL bindings `first`.. for targets, mask, lse and row loss. */
export function xentRowBindings(first: number): string {
  return `@group(0) @binding(${first}) var<storage, read> tgt: array<u32>;
@group(0) @binding(${first + 1}) var<storage, read> mask: array<f32>;
@group(0) @binding(${first + 2}) var<storage, read_write> lse: array<f32>;
@group(0) @binding(${first + 3}) var<storage, read_write> rowloss: array<f32>;`;
}

/** WGSL statements storing lse[r] = `l` and row r's loss; `o` is the row's first unit of x. */
export function xentRowStore(v: number): string {
  const at = vectorWidth(v) === 4 ? "x((o * 4u + tg) / 4u)[tg % 4u]" : "x(o + tg)";
  return `lse[r] = l;
  let tg = tgt[r];
  let m = mask[r];
  var loss = 0.0;
  if (m != 0.0) {
    if (tg < ${v}u) { loss = m * (l - ${at}); } else { loss = bitcast<f32>(0x7fc00000u | (tg & 0u)); } // runtime NaN: Chrome rejects a constant one
  }
  rowloss[r] = loss;`;
}

function lanes(v: number): { vu: number; max: string; sum: string } {
  const w = vectorWidth(v);
  return {
    vu: v / w,
    max: w === 4 ? "max(max(u.x, u.y), max(u.z, u.w))" : "u",
    sum: w === 4 ? "e.x + e.y + e.z + e.w" : "e",
  };
}

/**
 * One invocation per row (short rows): lse[n] and rowloss[n] = m[n]·(lse − x[n, t[n]]).
 * Bindings: x, targets, mask, lse, rowloss.
 */
export function xentRowsKernel(rows: number, v: number, src: Source = "storage"): Kernel {
  const { vu, max, sum } = lanes(v);
  return {
    name: "xent_rows",
    key: `r${rows}_v${v}_${src}`,
    loops: 2 * vu,
    workgroups: grid(Math.ceil(rows / 64)),
    code: `${floatInput("xent_rows", "x", 0, vectorWidth(v), src)}
${xentRowBindings(1)}
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
  ${xentRowStore(v)}
}`,
  };
}

/**
 * Long rows, first pass: part[n·chunks + k] = (max, Σ exp(x − max)) over units [k·span,
 * (k+1)·span) of row n, chunks = ⌈units/span⌉. Bindings: x, part.
 */
export function xentChunksKernel(rows: number, v: number, span: number, src: Source = "storage"): Kernel {
  const { vu, max, sum } = lanes(v);
  const chunks = Math.ceil(vu / span);
  return {
    name: "xent_chunks",
    key: `r${rows}_v${v}_s${span}_${src}`,
    loops: 2 * span,
    workgroups: grid(Math.ceil((rows * chunks) / 64)),
    code: `${floatInput("xent_chunks", "x", 0, vectorWidth(v), src)}
@group(0) @binding(1) var<storage, read_write> part: array<vec2<f32>>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let i = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (i >= ${rows * chunks}u) { return; }
  let o = (i / ${chunks}u) * ${vu}u;
  let j0 = (i % ${chunks}u) * ${span}u;
  let j1 = min(j0 + ${span}u, ${vu}u);
  var mx = -3.0e38;
  for (var j = j0; j < j1; j++) { let u = x(o + j); mx = max(mx, ${max}); }
  var s = 0.0;
  for (var j = j0; j < j1; j++) { let e = exp(x(o + j) - mx); s += ${sum}; }
  part[i] = vec2<f32>(mx, s);
}`,
  };
}

/**
 * Long rows, second pass: per row, lse from its chunks' (max, Σexp) and the row loss as
 * {@link xentRowsKernel} writes them. Bindings: x, part, targets, mask, lse, rowloss.
 */
export function xentCombineKernel(rows: number, v: number, chunks: number, src: Source = "storage"): Kernel {
  const { vu } = lanes(v);
  return {
    name: "xent_combine",
    key: `r${rows}_v${v}_k${chunks}_${src}`,
    loops: 2 * chunks,
    workgroups: grid(Math.ceil(rows / 64)),
    code: `${floatInput("xent_combine", "x", 0, vectorWidth(v), src)}
@group(0) @binding(1) var<storage, read> part: array<vec2<f32>>;
${xentRowBindings(2)}
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let r = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (r >= ${rows}u) { return; }
  let o = r * ${vu}u;
  let p = r * ${chunks}u;
  var mx = -3.0e38;
  for (var k = 0u; k < ${chunks}u; k++) { mx = max(mx, part[p + k].x); }
  var s = 0.0;
  for (var k = 0u; k < ${chunks}u; k++) { let q = part[p + k]; s += q.y * exp(q.x - mx); }
  let l = mx + log(s);
  ${xentRowStore(v)}
}`,
  };
}

/** The finish's input: per row (rowloss, mask), summed into (Σ row losses, Σ m). Bindings: rowloss, mask. */
export function xentLossInput(rows: number): SumInput {
  return {
    key: `xent${rows}`,
    n: rows,
    acc: "vec2<f32>",
    type: "vec2<f32>",
    bindings: 2,
    code: `@group(0) @binding(0) var<storage, read> rowloss: array<f32>;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
fn item(i: u32) -> vec2<f32> { return vec2<f32>(rowloss[i], mask[i]); }
fn total(a: vec2<f32>) -> vec2<f32> { return a; }`,
  };
}

/** loss[0] = Σ rowloss / Σ m (0 when Σ m = 0); scale[0] = 1/Σ m (or 0) for backward. Bindings: loss, scale. */
export function xentLossOutput(): SumOutput {
  return {
    key: "xent_loss",
    decl: (at) =>
      `@group(0) @binding(${at}) var<storage, read_write> loss: array<f32>;
@group(0) @binding(${at + 1}) var<storage, read_write> scale: array<f32>;`,
    body: `var inv = 0.0;
  if (s.y != 0.0) { inv = 1.0 / s.y; }
  loss[0] = s.x * inv;
  scale[0] = inv;`,
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
