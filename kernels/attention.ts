/**
 * Fused causal self-attention over GPT-2's packed qkv [B, T, 3C] (q, k, v side by side, head h at
 * columns h·hd .. h·hd+hd-1 of each), flash-style: one invocation per (batch, head, position) walks
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
    const width = n === "qkv" ? 3 * c4 : c4;
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
${decls.join("\n")}`;
}

function key(s: AttentionShape, src: AttentionSource): string {
  return `b${s.b}_t${s.t}_h${s.h}_hd${s.hd}_${src}`;
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
    var s${jj} = ${sumOver(hd4, (d) => `dot(q${d}, qkv(row${jj}, C4 + h * HD4 + ${d}u))`)};
    if (j0 + ${jj}u > i) { s${jj} = -3.0e38; }
    mb = max(mb, s${jj});`;
  const accumulate = (jj: number) =>
    `if (j0 + ${jj}u <= i) {
      let p = exp(s${jj} - mb);
      l += p;
${unroll(hd4, (d) => `acc${d} += p * qkv(row${jj}, 2u * C4 + h * HD4 + ${d}u);`, "      ")}
    }`;
  return {
    name: "attention_forward",
    key: key(s, src),
    loops: Math.ceil(s.t / BLOCK),
    workgroups: grid(Math.ceil(n / ATTENTION_WG)),
    code: `${common(s, src, ["qkv"])}
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
${entry(n, "i")}
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
${entry(n, "i")}
${unroll(hd4, (d) => `let q${d} = qkv(rowi, h * HD4 + ${d}u) * SCALE;`)}
${unroll(hd4, (d) => `let g${d} = dout(rowi, h * HD4 + ${d}u);`)}
${unroll(hd4, (d) => `var dq${d} = vec4<f32>();`)}
  let dsum = ${sum((d) => `dot(g${d}, o(rowi, h * HD4 + ${d}u))`)};
  dd[idx] = dsum;
  let l = lse[idx];
  for (var j = 0u; j <= i; j++) {
    let rowj = b * T + j;
${unroll(hd4, (d) => `let k${d} = qkv(rowj, C4 + h * HD4 + ${d}u);`, "    ")}
    let sc = ${sum((d) => `dot(q${d}, k${d})`)};
    let dp = ${sum((d) => `dot(g${d}, qkv(rowj, 2u * C4 + h * HD4 + ${d}u))`)};
    let ds = exp(sc - l) * (dp - dsum);
${unroll(hd4, (d) => `dq${d} += ds * k${d};`, "    ")}
  }
${unroll(hd4, (d) => `dqkv[rowi * 3u * C4 + h * HD4 + ${d}u] = dq${d} * SCALE;`)}
}`,
  };
}

/**
 * Backward, second pass: per key, dK and dV into the k and v columns of dqkv (reads D from the
 * first pass). Bindings: qkv, dout, lse, dd, dqkv.
 */
export function attentionBackwardKeyValueKernel(s: AttentionShape, src: AttentionSource): Kernel {
  const n = s.b * s.h * s.t;
  const hd4 = s.hd / 4;
  const sum = (f: (d: number) => string) => sumOver(hd4, f);
  return {
    name: "attention_backward_kv",
    key: key(s, src),
    loops: s.t,
    workgroups: grid(Math.ceil(n / ATTENTION_WG)),
    code: `${common(s, src, ["qkv", "dout"])}
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> dd: array<f32>;
@group(0) @binding(4) var<storage, read_write> dqkv: array<vec4<f32>>;
${entry(n, "j")}
${unroll(hd4, (d) => `let k${d} = qkv(rowj, C4 + h * HD4 + ${d}u) * SCALE;`)}
${unroll(hd4, (d) => `let v${d} = qkv(rowj, 2u * C4 + h * HD4 + ${d}u);`)}
${unroll(hd4, (d) => `var dk${d} = vec4<f32>();`)}
${unroll(hd4, (d) => `var dv${d} = vec4<f32>();`)}
  for (var i = j; i < T; i++) {
    let rowi = b * T + i;
    let r = bh * T + i;
${unroll(hd4, (d) => `let q${d} = qkv(rowi, h * HD4 + ${d}u);`, "    ")}
${unroll(hd4, (d) => `let g${d} = dout(rowi, h * HD4 + ${d}u);`, "    ")}
    let p = exp(${sum((d) => `dot(q${d}, k${d})`)} - lse[r]);
    let ds = p * (${sum((d) => `dot(g${d}, v${d})`)} - dd[r]);
${unroll(hd4, (d) => `dv${d} += p * g${d};`, "    ")}
${unroll(hd4, (d) => `dk${d} += ds * q${d};`, "    ")}
  }
${unroll(hd4, (d) => `dqkv[rowj * 3u * C4 + C4 + h * HD4 + ${d}u] = dk${d} * SCALE;`)}
${unroll(hd4, (d) => `dqkv[rowj * 3u * C4 + 2u * C4 + h * HD4 + ${d}u] = dv${d};`)}
}`,
  };
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
    code: `@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let idx = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (idx >= ${n}u) { return; }
  // idx enumerates [B, H, T, hd]
  let d = idx % ${s.hd}u;
  let t = (idx / ${s.hd}u) % ${s.t}u;
  let h = (idx / ${s.hd * s.t}u) % ${s.h}u;
  let b = idx / ${s.hd * s.t * s.h}u;
  let wide = (b * ${s.t}u + t) * ${parts * c}u + ${part * c}u + h * ${s.hd}u + d;
  ${scatter ? "dst[wide] = src[idx];" : "dst[idx] = src[wide];"}
}`,
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
