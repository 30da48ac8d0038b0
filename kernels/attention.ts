/**
 * Fused causal self-attention over a packed qkv row of (H + 2·Hkv)·hd floats: H q heads, then Hkv k
 * heads, then Hkv v heads (GPT-2's [B, T, 3C] is Hkv = H); query head h reads k/v head ⌊h / G⌋, G =
 * H / Hkv (grouped-query attention in transformers' repeat_kv order, without repeating K or V).
 * Flash-style: one invocation per (batch, head, position) walks
 * the keys in blocks with an online softmax, so no T×T matrix is ever stored; forward saves the
 * log-sum-exp per row, backward recomputes the probabilities from it:
 * - dQ pass, per query i: D_i = dO_i·O_i, dQ_i = scale·Σ_{j≤i} p_ij (dO_i·v_j − D_i) k_j
 * - dKV pass, per key j: dV_j = Σ_{i≥j} p_ij dO_i, dK_j = scale·Σ_{i≥j} p_ij (dO_i·v_j − D_i) q_i
 * Two sources: `storage` reads the buffers; `texture` reads rgba32float copies of them (software
 * adapters, where texture reads are far cheaper than buffer reads, see matmul_packed.ts).
 */
import { f32, grid, type Kernel, type Source, WGSL_GRID_PARAMS, WGSL_GROUP_INDEX } from "./kernel.ts";

/** Sizes of an attention call. */
export interface AttentionShape {
  /** Batch. */
  b: number;
  /** Sequence length. */
  t: number;
  /** Heads. */
  h: number;
  /** Head dimension (a multiple of 4). */
  hd: number;
  /** K/V heads, dividing h (h: multi-head attention, GPT-2). */
  hkv: number;
}

/** Whether `s` shares each k/v head among several query heads (grouped-query attention). */
export function grouped(s: AttentionShape): boolean {
  return s.hkv !== s.h;
}

/** Floats of one packed qkv row: (H + 2·Hkv)·hd. */
export function qkvWidth(s: AttentionShape): number {
  return (s.h + 2 * s.hkv) * s.hd;
}

/**
 * WGSL offset in vec4s, within a qkv row, of the k (part 1) or v (part 2) head that query head `h`
 * reads: head h itself, or `kvh` = h / G when grouped (GPT-2's kernels keep their exact source).
 */
export function kvColumn(s: AttentionShape, part: 1 | 2): string {
  if (!grouped(s)) return part === 1 ? "C4 + h * HD4" : "2u * C4 + h * HD4";
  return `${part === 1 ? "C4" : "V4"} + kvh * HD4`;
}

/** WGSL constants of grouped shapes: HKV, G, V4 (first v column, vec4s) and W4 (row width, vec4s). */
export function groupedConstants(s: AttentionShape): string {
  if (!grouped(s)) return "";
  const hd4 = s.hd / 4;
  return `const HKV = ${s.hkv}u;
const G = ${s.h / s.hkv}u;
const V4 = ${(s.h + s.hkv) * hd4}u;
const W4 = ${qkvWidth(s) / 4}u;
`;
}

/** The query heads of a group one kernel covers: gh = first … first + count − 1. */
export interface GroupSpan {
  /** First query head within the group. */
  first: number;
  /** Query heads covered. */
  count: number;
}

/** Where the kernels read q, k, v, O and dO from (a texture here holds one tensor row per texel row). */
export type AttentionSource = Source;

/** Keys per online-softmax block (one rescale of the accumulator per block). */
const BLOCK = 8;

/** Workgroup size of the attention kernels. */
export const ATTENTION_WG = 64;

function common(s: AttentionShape, src: AttentionSource, names: string[]): string {
  const c4 = (s.h * s.hd) / 4;
  const decls = names.map((n, i) => {
    const width = n === "qkv" ? qkvWidth(s) / 4 : c4;
    return src === "texture"
      ? `@group(0) @binding(${i}) var ${n}_t: texture_storage_2d<rgba32float, read>;
fn ${n}(row: u32, c: u32) -> vec4<f32> { return textureLoad(${n}_t, vec2<u32>(c, row)); }`
      : `@group(0) @binding(${i}) var<storage, read> ${n}_b: array<vec4<f32>>;
fn ${n}(row: u32, c: u32) -> vec4<f32> { return ${n}_b[row * ${width}u + c]; }`;
  });
  return `const T = ${s.t}u;
const H = ${s.h}u;
const HD4 = ${s.hd / 4}u;
const C4 = ${c4}u;
const SCALE = ${f32(1 / Math.sqrt(s.hd))};
${groupedConstants(s)}${decls.join("\n")}`;
}

function key(s: AttentionShape, src: AttentionSource): string {
  return `b${s.b}_t${s.t}_h${s.h}_hd${s.hd}${grouped(s) ? `_kv${s.hkv}` : ""}_${src}`;
}

/** The `kvh` line of a query-head invocation when grouped. */
function kvHead(s: AttentionShape): string {
  return grouped(s) ? "\n  let kvh = h / G;" : "";
}

/** WGSL row stride of dqkv, vec4s. */
function rowStride(s: AttentionShape): string {
  return grouped(s) ? "W4" : "3u * C4";
}

/**
 * The entry point's head: one invocation per (batch, head, position `pos`), with `b`, `h`, `bh`
 * (b·H + h), `pos` and `row<pos>` (its row in [B·T, ·] inputs).
 */
function entry(n: number, pos: "i" | "j"): string {
  return `@compute @workgroup_size(${ATTENTION_WG})
fn main(${WGSL_GRID_PARAMS}) {
  let idx = ${WGSL_GROUP_INDEX} * ${ATTENTION_WG}u + lid;
  if (idx >= ${n}u) { return; }
  let ${pos} = idx % T;
  let bh = idx / T;
  let b = bh / H;
  let h = bh % H;
  let row${pos} = b * T + ${pos};`;
}

/** `f(0) + … + f(n−1)`: an unrolled sum over the head dimension's vec4s. */
export function sumOver(n: number, f: (d: number) => string): string {
  return Array.from({ length: n }, (_, d) => f(d)).join(" + ");
}

/** Lines `f(0) … f(n−1)` joined, indented: unrolled so private values stay in registers. */
export function unroll(n: number, f: (d: number) => string, indent = "  "): string {
  return Array.from({ length: n }, (_, d) => indent + f(d)).join("\n");
}

/** Forward: out [B, T, C] and lse [B, H, T]. Bindings: qkv, out, lse. */
export function attentionForwardKernel(s: AttentionShape, src: AttentionSource): Kernel {
  const n = s.b * s.h * s.t;
  const hd4 = s.hd / 4;
  // Scores of one block: unrolled over keys and head dimensions (llvmpipe turns dynamically
  // indexed private arrays into per-lane memory accesses).
  const score = (jj: number) =>
    `let row${jj} = b * T + min(j0 + ${jj}u, i);
    var s${jj} = ${sumOver(hd4, (d) => `dot(q${d}, qkv(row${jj}, ${kvColumn(s, 1)} + ${d}u))`)};
    if (j0 + ${jj}u > i) { s${jj} = -3.0e38; }
    mb = max(mb, s${jj});`;
  const accumulate = (jj: number) =>
    `if (j0 + ${jj}u <= i) {
      let p = exp(s${jj} - mb);
      l += p;
${unroll(hd4, (d) => `acc${d} += p * qkv(row${jj}, ${kvColumn(s, 2)} + ${d}u);`, "      ")}
    }`;
  return {
    name: "attention_forward",
    key: key(s, src),
    loops: Math.ceil(s.t / BLOCK),
    workgroups: grid(Math.ceil(n / ATTENTION_WG)),
    code: `${common(s, src, ["qkv"])}
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
${entry(n, "i")}${kvHead(s)}
${unroll(hd4, (d) => `let q${d} = qkv(rowi, h * HD4 + ${d}u) * SCALE;`)}
${unroll(hd4, (d) => `var acc${d} = vec4<f32>();`)}
  var m = -3.0e38;
  var l = 0.0;
  for (var j0 = 0u; j0 <= i; j0 += ${BLOCK}u) {
    var mb = m;
${unroll(BLOCK, score, "    ")}
    let corr = exp(m - mb);
    l = l * corr;
${unroll(hd4, (d) => `acc${d} = acc${d} * corr;`, "    ")}
${unroll(BLOCK, accumulate, "    ")}
    m = mb;
  }
${unroll(hd4, (d) => `out[rowi * C4 + h * HD4 + ${d}u] = acc${d} / l;`)}
  lse[idx] = m + log(l);
}`,
  };
}

/**
 * Backward, first pass: per query, D = dO·O (saved for the second pass) and dQ into the q columns
 * of dqkv. Bindings: qkv, o, dout, lse, dd, dqkv.
 */
export function attentionBackwardQueryKernel(s: AttentionShape, src: AttentionSource): Kernel {
  const n = s.b * s.h * s.t;
  const hd4 = s.hd / 4;
  const sum = (f: (d: number) => string) => sumOver(hd4, f);
  return {
    name: "attention_backward_q",
    key: key(s, src),
    loops: s.t,
    workgroups: grid(Math.ceil(n / ATTENTION_WG)),
    code: `${common(s, src, ["qkv", "o", "dout"])}
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> dd: array<f32>;
@group(0) @binding(5) var<storage, read_write> dqkv: array<vec4<f32>>;
${entry(n, "i")}${kvHead(s)}
${unroll(hd4, (d) => `let q${d} = qkv(rowi, h * HD4 + ${d}u) * SCALE;`)}
${unroll(hd4, (d) => `let g${d} = dout(rowi, h * HD4 + ${d}u);`)}
${unroll(hd4, (d) => `var dq${d} = vec4<f32>();`)}
  let dsum = ${sum((d) => `dot(g${d}, o(rowi, h * HD4 + ${d}u))`)};
  dd[idx] = dsum;
  let l = lse[idx];
  for (var j = 0u; j <= i; j++) {
    let rowj = b * T + j;
${unroll(hd4, (d) => `let k${d} = qkv(rowj, ${kvColumn(s, 1)} + ${d}u);`, "    ")}
    let sc = ${sum((d) => `dot(q${d}, k${d})`)};
    let dp = ${sum((d) => `dot(g${d}, qkv(rowj, ${kvColumn(s, 2)} + ${d}u))`)};
    let ds = exp(sc - l) * (dp - dsum);
${unroll(hd4, (d) => `dq${d} += ds * k${d};`, "    ")}
  }
${unroll(hd4, (d) => `dqkv[rowi * ${rowStride(s)} + h * HD4 + ${d}u] = dq${d} * SCALE;`)}
}`,
  };
}

/**
 * Backward, second pass: per key, dK and dV into the k and v columns of dqkv (reads D from the
 * first pass). Grouped: one invocation per k/v head and key, summing over the query heads `span` of
 * its group in a loop (added to what an earlier span wrote when it does not start the group).
 * Bindings: qkv, dout, lse, dd, dqkv.
 */
export function attentionBackwardKeyValueKernel(
  s: AttentionShape,
  src: AttentionSource,
  span: GroupSpan = { first: 0, count: s.h / s.hkv },
): Kernel {
  const hd4 = s.hd / 4;
  const sum = (f: (d: number) => string) => sumOver(hd4, f);
  const overQueries = (ind: string) =>
    `${ind}for (var i = j; i < T; i++) {
${ind}  let rowi = b * T + i;
${ind}  let r = bh * T + i;
${unroll(hd4, (d) => `let q${d} = qkv(rowi, h * HD4 + ${d}u);`, `${ind}  `)}
${unroll(hd4, (d) => `let g${d} = dout(rowi, h * HD4 + ${d}u);`, `${ind}  `)}
${ind}  let p = exp(${sum((d) => `dot(q${d}, k${d})`)} - lse[r]);
${ind}  let ds = p * (${sum((d) => `dot(g${d}, v${d})`)} - dd[r]);
${unroll(hd4, (d) => `dv${d} += p * g${d};`, `${ind}  `)}
${unroll(hd4, (d) => `dk${d} += ds * q${d};`, `${ind}  `)}
${ind}}`;
  const assign = span.first > 0 ? "+=" : "=";
  const body = `${unroll(hd4, (d) => `let k${d} = qkv(rowj, ${kvColumn(s, 1)} + ${d}u) * SCALE;`)}
${unroll(hd4, (d) => `let v${d} = qkv(rowj, ${kvColumn(s, 2)} + ${d}u);`)}
${unroll(hd4, (d) => `var dk${d} = vec4<f32>();`)}
${unroll(hd4, (d) => `var dv${d} = vec4<f32>();`)}
${
    grouped(s)
      ? `  for (var gh = ${span.first}u; gh < ${span.first + span.count}u; gh++) {
    let h = kvh * G + gh;
    let bh = b * H + h;
${overQueries("    ")}
  }`
      : overQueries("  ")
  }
${unroll(hd4, (d) => `dqkv[rowj * ${rowStride(s)} + ${kvColumn(s, 1)} + ${d}u] ${assign} dk${d} * SCALE;`)}
${unroll(hd4, (d) => `dqkv[rowj * ${rowStride(s)} + ${kvColumn(s, 2)} + ${d}u] ${assign} dv${d};`)}
}`;
  const bindings = `${common(s, src, ["qkv", "dout"])}
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> dd: array<f32>;
@group(0) @binding(4) var<storage, read_write> dqkv: array<vec4<f32>>;`;
  if (!grouped(s)) {
    const n = s.b * s.h * s.t;
    return {
      name: "attention_backward_kv",
      key: key(s, src),
      loops: s.t,
      workgroups: grid(Math.ceil(n / ATTENTION_WG)),
      code: `${bindings}
${entry(n, "j")}
${body}`,
    };
  }
  const n = s.b * s.hkv * s.t;
  return {
    name: "attention_backward_kv",
    key: `${key(s, src)}_g${span.first}_${span.count}`,
    loops: span.count * (s.t + 1),
    workgroups: grid(Math.ceil(n / ATTENTION_WG)),
    code: `${bindings}
@compute @workgroup_size(${ATTENTION_WG})
fn main(${WGSL_GRID_PARAMS}) {
  let idx = ${WGSL_GROUP_INDEX} * ${ATTENTION_WG}u + lid;
  if (idx >= ${n}u) { return; }
  let j = idx % T;
  let bkv = idx / T;
  let b = bkv / HKV;
  let kvh = bkv % HKV;
  let rowj = b * T + j;
${body}`,
  };
}

/**
 * The non-fused path's heads of one part (0 q, 1 k, 2 v) of a grouped qkv [B, T, (H + 2·Hkv)·hd]
 * as [B, H, T, hd], each k/v head copied to the query heads of its group; with `scatter` the
 * reverse, a k/v head summing the gradients of its group's copies.
 */
export function groupedHeadsKernel(s: AttentionShape, part: number, scatter: boolean): Kernel {
  const g = s.h / s.hkv;
  const sums = scatter && part > 0;
  const heads = sums ? s.hkv : s.h;
  const n = s.b * s.t * heads * s.hd;
  const col = [0, s.h, s.h + s.hkv][part] * s.hd;
  const head = part > 0 && !scatter ? `hh / ${g}u` : "hh";
  const wide = `(b * ${s.t}u + t) * ${qkvWidth(s)}u + ${col}u + ${head} * ${s.hd}u + d`;
  const write = !scatter ? `dst[idx] = src[${wide}];` : !sums ? `dst[${wide}] = src[idx];` : `var acc = 0.0;
  for (var gh = 0u; gh < ${g}u; gh++) { acc += src[((b * ${s.h}u + hh * ${g}u + gh) * ${s.t}u + t) * ${s.hd}u + d]; }
  dst[${wide}] = acc;`;
  return {
    name: scatter ? "grouped_heads_scatter" : "grouped_heads_gather",
    key: `${key(s, "storage")}_p${part}`,
    loops: sums ? g : 0,
    workgroups: grid(Math.ceil(n / 64)),
    code: headsProgram(s, heads, sums ? "Hkv" : "H", write),
  };
}

/**
 * A kernel over [B, `heads`, T, hd] (one invocation an element: b, hh, t, d) that copies between a
 * head-major tensor and the columns of a packed row; `body` does the copy.
 */
function headsProgram(s: AttentionShape, heads: number, label: string, body: string): string {
  const n = s.b * s.t * heads * s.hd;
  return `@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let idx = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (idx >= ${n}u) { return; }
  // idx enumerates [B, ${label}, T, hd]
  let d = idx % ${s.hd}u;
  let t = (idx / ${s.hd}u) % ${s.t}u;
  let hh = (idx / ${s.hd * s.t}u) % ${heads}u;
  let b = idx / ${s.hd * s.t * heads}u;
  ${body}
}`;
}

/**
 * Heads of one part (0 q, 1 k, 2 v) of a [B, T, parts·C] tensor as [B, H, T, hd] (the non-fused
 * reference path); with `scatter` the reverse: [B, H, T, hd] into those columns of [B, T, parts·C].
 */
export function headsKernel(s: AttentionShape, parts: number, part: number, scatter: boolean): Kernel {
  const c = s.h * s.hd;
  const n = s.b * s.t * c;
  return {
    name: scatter ? "heads_scatter" : "heads_gather",
    key: `${key(s, "storage")}_p${parts}_${part}`,
    loops: 0,
    workgroups: grid(Math.ceil(n / 64)),
    code: headsProgram(
      s,
      s.h,
      "H",
      `let wide = (b * ${s.t}u + t) * ${parts * c}u + ${part * c}u + hh * ${s.hd}u + d;
  ${scatter ? "dst[wide] = src[idx];" : "dst[idx] = src[wide];"}`,
    ),
  };
}

/** Row softmax of scale·x with a causal mask over [rows of T] (row i of each T×T block keeps j ≤ i). */
export function causalSoftmaxKernel(rows: number, t: number, scale: number): Kernel {
  return {
    name: "causal_softmax",
    key: `r${rows}_t${t}_s${scale}`,
    loops: 3 * t,
    workgroups: grid(Math.ceil(rows / 64)),
    code: `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let r = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (r >= ${rows}u) { return; }
  let i = r % ${t}u;
  let o = r * ${t}u;
  var m = -3.0e38;
  for (var j = 0u; j <= i; j++) { m = max(m, x[o + j] * ${f32(scale)}); }
  var z = 0.0;
  for (var j = 0u; j <= i; j++) { z += exp(x[o + j] * ${f32(scale)} - m); }
  for (var j = 0u; j < ${t}u; j++) {
    if (j <= i) { y[o + j] = exp(x[o + j] * ${f32(scale)} - m) / z; } else { y[o + j] = 0.0; }
  }
}`,
  };
}

/** dx = scale · y ⊙ (dy − Σ dy ⊙ y) per row (masked entries have y = 0, so dx = 0 there). */
export function causalSoftmaxBackwardKernel(rows: number, t: number, scale: number): Kernel {
  return {
    name: "causal_softmax_backward",
    key: `r${rows}_t${t}_s${scale}`,
    loops: 2 * t,
    workgroups: grid(Math.ceil(rows / 64)),
    code: `@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let r = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (r >= ${rows}u) { return; }
  let o = r * ${t}u;
  var s = 0.0;
  for (var j = 0u; j < ${t}u; j++) { s += dy[o + j] * y[o + j]; }
  for (var j = 0u; j < ${t}u; j++) { dx[o + j] = ${f32(scale)} * y[o + j] * (dy[o + j] - s); }
}`,
  };
}
