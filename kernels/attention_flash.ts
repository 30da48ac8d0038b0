/**
 * Flash attention for the GPU kernel family, on the packed qkv rows of attention.ts (GPT-2's [B, T, 3C],
 * or grouped: H q heads, Hkv k heads, Hkv v heads, query head h reading k/v head h / G) and with the
 * same bindings, log-sum-exp [B, H, T] and D = rowsum(dO ⊙ O), so the op swaps one set of
 * kernels for the other.
 *
 * Work split: one query (forward, dQ) or one key (dK/dV) per thread, and the other side staged a
 * block at a time in workgroup memory by all threads together with coalesced vec4 loads. Every thread
 * of a workgroup then reads the same staged vec4 at the same time: a broadcast, one shared-memory
 * transaction per warp and no bank conflicts, 4 FMAs per load. Splitting a query's head dimension over
 * several threads would instead need a cross-thread sum per score (subgroups, or a barrier without
 * them); owning the whole row needs none, and no subgroups are used at all. The thread's own rows
 * (q, dO, k, v) and accumulators stay in registers up to REGISTER_FLOATS floats; rows beyond it live in
 * workgroup memory padded by one vec4 per row, so the per-thread reads of different rows hit
 * different banks. The dK/dV accumulators alone exceed that budget for hd > 64, so that pass then
 * splits the head dimension's columns over workgroups (recomputing the scores in each).
 *
 * Loops: over staged blocks, and over chunks of a few rows within each (`loops` = blocks × (1 +
 * chunks), a few hundred at T = 2048); staging, a chunk's rows and the head dimension are unrolled.
 * Causal: a query block visits key blocks up to its last query, a key block visits query blocks from
 * its first key on, and chunks wholly on the masked side are skipped. Workgroups with the most
 * blocks to visit are dispatched first. Deterministic: each output element is written once, by one
 * thread, and no atomics are used.
 */
import {
  type AttentionShape,
  grouped,
  groupedConstants,
  type GroupSpan,
  kvColumn,
  qkvWidth,
  sumOver,
  unroll,
} from "./attention.ts";
import { f32, grid, type Kernel, WGSL_GRID_PARAMS, WGSL_GROUP_INDEX } from "./kernel.ts";

/** Largest head dimension the flash kernels take: a thread's accumulators must fit in registers. */
export const FLASH_MAX_HEAD_DIM = 128;

/** Floats of a thread's accumulators and own rows kept in registers (128 + temporaries stays < 255 on NVIDIA). */
const REGISTER_FLOATS = 128;

/**
 * Staged rows per unrolled chunk of the backward passes: within a staged block, chunks run as a loop,
 * because lavapipe's compile time grows superlinearly with straight-line code (a forward kernel with
 * 32 keys unrolled at hd 64 takes two minutes to compile, 8 keys 4 s, 4 keys 1 s).
 */
const CHUNK = 4;

/** Keys per chunk of the forward pass, where each chunk also rescales the accumulator once (hd/4 multiplies). */
const SOFTMAX_CHUNK = 8;

/** The three flash kernels: forward, backward per query block (dQ, D), backward per key block (dK, dV). */
export type FlashPass = "forward" | "query" | "keyValue";

/** Block sizes of one flash kernel. */
export interface FlashTile {
  /** Rows (queries, or keys in the dK/dV pass) per workgroup, one per thread. */
  threads: number;
  /** Rows of the other side (keys, or queries) staged in workgroup memory per loop iteration. */
  block: number;
}

/** Tiles of the three flash kernels for one shape. */
export type FlashPlan = Record<FlashPass, FlashTile>;

/** Column parts of the head dimension per workgroup: 2 when dK and dV together pass the register budget. */
function columnParts(pass: FlashPass, hd: number): number {
  return pass === "keyValue" ? Math.ceil((2 * hd) / REGISTER_FLOATS) : 1;
}

/** Whether each of a pass's own rows (forward: q; dQ: q, dO; dK/dV: k, v) stays in registers. */
function ownInRegisters(pass: FlashPass, hd: number): boolean[] {
  const accumulators = pass === "keyValue" ? 2 : 1;
  let used = accumulators * 4 * Math.ceil(hd / 4 / columnParts(pass, hd));
  return Array.from({ length: pass === "forward" ? 1 : 2 }, () => {
    if (used + hd > REGISTER_FLOATS) return false;
    used += hd;
    return true;
  });
}

/** Workgroup memory one flash kernel needs with `tile`, bytes. */
export function flashWorkgroupBytes(pass: FlashPass, hd: number, tile: FlashTile): number {
  const ownShared = ownInRegisters(pass, hd).filter((inRegisters) => !inRegisters).length;
  // q and dO rows plus lse and D per staged query; k and v rows per staged key.
  const staged = pass === "keyValue" ? tile.block * (8 * hd + 8) : tile.block * 8 * hd;
  return ownShared * tile.threads * (hd + 4) * 4 + staged;
}

function header(s: AttentionShape, bindings: [string, "read" | "read_write", "vec4<f32>" | "f32"][]): string {
  const c4 = (s.h * s.hd) / 4;
  return `const T = ${s.t}u;
const H = ${s.h}u;
const HD4 = ${s.hd / 4}u;
const C4 = ${c4}u;
const W = ${qkvWidth(s) / 4}u;
const SCALE = ${f32(1 / Math.sqrt(s.hd))};
${groupedConstants(s)}${
    bindings.map(([name, access, type], i) =>
      `@group(0) @binding(${i}) var<storage, ${access}> ${name}: array<${type}>;`
    ).join("\n")
  }`;
}

function key(s: AttentionShape, tile: FlashTile): string {
  const kv = grouped(s) ? `_kv${s.hkv}` : "";
  return `b${s.b}_t${s.t}_h${s.h}_hd${s.hd}${kv}_r${tile.threads}_c${tile.block}`;
}

/**
 * vec4 `c` in row `row` (absolute, B·T rows) of qkv part `part`: q head h (0), or the k (1) or v (2)
 * head query head h reads.
 */
function qkvAt(s: AttentionShape, part: 0 | 1 | 2): (row: string, c: string) => string {
  if (part > 0 && grouped(s)) return (row, c) => `qkv[(${row}) * W + ${kvColumn(s, part as 1 | 2)} + ${c}]`;
  return (row, c) => `qkv[(${row}) * W + ${part ? `${part}u * C4 + ` : ""}h * HD4 + ${c}]`;
}

/** vec4 `c` of head h in row `row` of a [B·T, C] buffer. */
function rowsAt(buffer: string): (row: string, c: string) => string {
  return (row, c) => `${buffer}[(${row}) * C4 + h * HD4 + ${c}]`;
}

/**
 * Unrolled cooperative copy of rows `first + r` (r < rows, clamped to the sequence) into workgroup
 * array `dst` (row stride `stride` vec4s): consecutive threads take consecutive vec4s of a row, so a
 * warp's global loads coalesce.
 */
function stage(
  dst: string,
  rows: number,
  hd4: number,
  threads: number,
  stride: number,
  first: string,
  src: (row: string, c: string) => string,
  scale = "",
): string {
  const n = rows * hd4;
  return Array.from({ length: Math.ceil(n / threads) }, (_, k) => {
    const e = `lid + ${k * threads}u`;
    const body = `{ let e = ${e}; let r = e / HD4; let c = e % HD4; ${dst}[r * ${stride}u + c] = ${
      src(`base + min(${first} + r, T - 1u)`, "c")
    }${scale}; }`;
    return `  ${(k + 1) * threads > n ? `if (${e} < ${n}u) ${body}` : body}`;
  }).join("\n");
}

/** A thread's own row: its declaration, its load, and its vec4 `d` (registers, or padded workgroup row `lid`). */
interface OwnRow {
  decl: string;
  load: string;
  at: (d: number | string) => string;
}

function ownRow(
  name: string,
  inRegisters: boolean,
  hd4: number,
  threads: number,
  first: string,
  src: (row: string, c: string) => string,
  scale = "",
): OwnRow {
  if (inRegisters) {
    return {
      decl: "",
      load: unroll(
        hd4,
        (d) => `let ${name}${d} = ${src(`base + min(${first} + lid, T - 1u)`, `${d}u`)}${scale};`,
      ),
      at: (d) => `${name}${d}`,
    };
  }
  return {
    decl: `var<workgroup> ${name}_w: array<vec4<f32>, ${threads * (hd4 + 1)}>;`,
    load: stage(`${name}_w`, threads, hd4, threads, hd4 + 1, first, src, scale),
    at: (d) => `${name}_w[lid * ${hd4 + 1}u + ${d}u]`,
  };
}

/**
 * Start of a forward or dQ workgroup over query block `i0`: `bh`, `b`, `h`, `base` (b·T), the thread's
 * query `i`, `ic` (i clamped to the sequence, so idle threads read real rows) and the block's last
 * query `ilast`.
 */
function queryBlockHead(s: AttentionShape, threads: number): string {
  const nqb = Math.ceil(s.t / threads);
  return `@compute @workgroup_size(${threads})
fn main(${WGSL_GRID_PARAMS}) {
  let grp = ${WGSL_GROUP_INDEX};
  if (grp >= ${s.b * s.h * nqb}u) { return; }
  let bh = grp % ${s.b * s.h}u;
  let i0 = (${nqb - 1}u - grp / ${s.b * s.h}u) * ${threads}u;
  let b = bh / H;
  let h = bh % H;${grouped(s) ? "\n  let kvh = h / G;" : ""}
  let base = b * T;
  let i = i0 + lid;
  let ic = min(i, T - 1u);
  let ilast = min(i0 + ${threads}u, T) - 1u;`;
}

/**
 * The forward and dQ loops: every key block up to the query block's last query, K and V staged, then
 * its `chunk`-key chunks up to that query; `body` sees the chunk's first key `j1` and its first vec4 `o`
 * in `ks` and `vs`.
 */
function overKeyChunks(s: AttentionShape, tile: FlashTile, chunk: number, body: string): string {
  const hd4 = s.hd / 4;
  const stageKV = (name: string, part: 1 | 2) =>
    stage(name, tile.block, hd4, tile.threads, hd4, "j0", qkvAt(s, part)).replaceAll("\n", "\n  ");
  return `  for (var kb = 0u; kb <= ilast / ${tile.block}u; kb++) {
    let j0 = kb * ${tile.block}u;
    workgroupBarrier();
  ${stageKV("ks", 1)}
  ${stageKV("vs", 2)}
    workgroupBarrier();
    for (var c = 0u; c < min(${tile.block / chunk}u, (ilast - j0) / ${chunk}u + 1u); c++) {
      let j1 = j0 + c * ${chunk}u;
      let o = c * ${chunk * hd4}u;
${body}
    }
  }`;
}

/** Iterations of a loop over `blocks` blocks of `block` rows with a loop over their chunks inside. */
function chunkLoops(blocks: number, block: number, chunk: number): number {
  return blocks * (1 + block / chunk);
}

function keyValueTiles(hd4: number, tile: FlashTile): string {
  return `var<workgroup> ks: array<vec4<f32>, ${tile.block * hd4}>;
var<workgroup> vs: array<vec4<f32>, ${tile.block * hd4}>;`;
}

/** Forward: out [B, T, C] and lse [B, H, T] (of the scaled scores). Bindings: qkv, out, lse. */
export function flashForwardKernel(s: AttentionShape, tile: FlashTile): Kernel {
  const hd4 = s.hd / 4;
  const [qInRegisters] = ownInRegisters("forward", s.hd);
  const q = ownRow("q", qInRegisters, hd4, tile.threads, "i0", qkvAt(s, 0), " * SCALE");
  const at = (tileName: string, jj: number, d: number) => `${tileName}[o + ${jj * hd4 + d}u]`;
  // One online-softmax step per chunk: its scores in registers, one rescale of the accumulator.
  // Masked scores are −3e38, so exp gives 0; the first chunk holds key 0, which every query sees, so
  // the running max is finite from then on.
  const chunk = `      var mb = m;
${
    unroll(SOFTMAX_CHUNK, (jj) =>
      `let s${jj} = select(${
        sumOver(hd4, (d) =>
          `dot(${q.at(d)}, ${at("ks", jj, d)})`)
      }, -3.0e38, j1 + ${jj}u > ic);
      mb = max(mb, s${jj});`, "      ")
  }
      let corr = exp(m - mb);
      l = l * corr;
${unroll(hd4, (d) => `acc${d} = acc${d} * corr;`, "      ")}
${
    unroll(SOFTMAX_CHUNK, (jj) =>
      `let p${jj} = exp(s${jj} - mb);
      l += p${jj};
${unroll(hd4, (d) => `acc${d} += p${jj} * ${at("vs", jj, d)};`, "      ")}`, "      ")
  }
      m = mb;`;
  return {
    name: "attention_flash_forward",
    key: key(s, tile),
    loops: chunkLoops(Math.ceil(s.t / tile.block), tile.block, SOFTMAX_CHUNK),
    workgroups: grid(s.b * s.h * Math.ceil(s.t / tile.threads)),
    code: `${
      header(s, [["qkv", "read", "vec4<f32>"], ["out", "read_write", "vec4<f32>"], [
        "lse",
        "read_write",
        "f32",
      ]])
    }
${keyValueTiles(hd4, tile)}
${q.decl}
${queryBlockHead(s, tile.threads)}
${q.load}
${unroll(hd4, (d) => `var acc${d} = vec4<f32>();`)}
  var m = -3.0e38;
  var l = 0.0;
${overKeyChunks(s, tile, SOFTMAX_CHUNK, chunk)}
  if (i < T) {
${unroll(hd4, (d) => `${rowsAt("out")("base + i", `${d}u`)} = acc${d} / l;`, "    ")}
    lse[bh * T + i] = m + log(l);
  }
}`,
  };
}

/**
 * Backward per query block: D = dO·O per query (saved for the dK/dV pass) and dQ into the q columns
 * of dqkv, K and V staged per key block. Bindings: qkv, o, dout, lse, dd, dqkv.
 */
export function flashBackwardQueryKernel(s: AttentionShape, tile: FlashTile): Kernel {
  const hd4 = s.hd / 4;
  const [qIn, gIn] = ownInRegisters("query", s.hd);
  const q = ownRow("q", qIn, hd4, tile.threads, "i0", qkvAt(s, 0), " * SCALE");
  const g = ownRow("g", gIn, hd4, tile.threads, "i0", rowsAt("dout"));
  const at = (tileName: string, jj: number, d: number) => `${tileName}[o + ${jj * hd4 + d}u]`;
  const perKey = (jj: number) =>
    `{
        let sc = ${sumOver(hd4, (d) => `dot(${q.at(d)}, ${at("ks", jj, d)})`)};
        let dp = ${sumOver(hd4, (d) => `dot(${g.at(d)}, ${at("vs", jj, d)})`)};
        let ds = select(0.0, exp(sc - l) * (dp - dsum), j1 + ${jj}u <= ic);
${unroll(hd4, (d) => `dq${d} += ds * ${at("ks", jj, d)};`, "        ")}
      }`;
  return {
    name: "attention_flash_backward_q",
    key: key(s, tile),
    loops: chunkLoops(Math.ceil(s.t / tile.block), tile.block, CHUNK),
    workgroups: grid(s.b * s.h * Math.ceil(s.t / tile.threads)),
    code: `${
      header(s, [
        ["qkv", "read", "vec4<f32>"],
        ["o", "read", "vec4<f32>"],
        ["dout", "read", "vec4<f32>"],
        ["lse", "read", "f32"],
        ["dd", "read_write", "f32"],
        ["dqkv", "read_write", "vec4<f32>"],
      ])
    }
${keyValueTiles(hd4, tile)}
${q.decl}
${g.decl}
${queryBlockHead(s, tile.threads)}
${q.load}
${g.load}
  let dsum = ${
      sumOver(
        hd4,
        (d) => `dot(${rowsAt("dout")("base + ic", `${d}u`)}, ${rowsAt("o")("base + ic", `${d}u`)})`,
      )
    };
  let l = lse[bh * T + ic];
${unroll(hd4, (d) => `var dq${d} = vec4<f32>();`)}
${overKeyChunks(s, tile, CHUNK, unroll(CHUNK, perKey, "      "))}
  if (i < T) {
    dd[bh * T + i] = dsum;
${unroll(hd4, (d) => `dqkv[(base + i) * W + h * HD4 + ${d}u] = dq${d} * SCALE;`, "    ")}
  }
}`,
  };
}

/**
 * Backward per key block: dK and dV into the k and v columns of dqkv (columns c0 … c0 + PW − 1 of the
 * head when split), q, dO, lse and D staged per query block. Grouped: per k/v head, a loop over the
 * query heads `span` of its group around the query blocks (added to what an earlier span wrote when
 * it does not start the group). Bindings: qkv, dout, lse, dd, dqkv.
 */
export function flashBackwardKeyValueKernel(
  s: AttentionShape,
  tile: FlashTile,
  span: GroupSpan = { first: 0, count: s.h / s.hkv },
): Kernel {
  if (tile.block > tile.threads) {
    throw new Error(
      `attention_flash_backward_kv: ${tile.block} staged queries need as many threads, not ${tile.threads}`,
    );
  }
  const hd4 = s.hd / 4;
  const parts = columnParts("keyValue", s.hd);
  const pw = Math.ceil(hd4 / parts);
  const nkb = Math.ceil(s.t / tile.threads);
  const nqb = Math.ceil(s.t / tile.block);
  const [kIn, vIn] = ownInRegisters("keyValue", s.hd);
  const k = ownRow("k", kIn, hd4, tile.threads, "j0", qkvAt(s, 1), " * SCALE");
  const v = ownRow("v", vIn, hd4, tile.threads, "j0", qkvAt(s, 2));
  const heads = s.b * s.hkv;
  const col = (d: number) => (parts > 1 ? `c0 + ${d}u` : `${d}u`);
  const at = (tileName: string, ii: number, d: number | string) => `${tileName}[o + ${ii * hd4}u + ${d}]`;
  const perQuery = (ii: number) =>
    `{
        let s = ${sumOver(hd4, (d) => `dot(${at("qs", ii, `${d}u`)}, ${k.at(d)})`)};
        let p = select(0.0, exp(s - ls[r + ${ii}u]), i1 + ${ii}u >= jc && i1 + ${ii}u < T);
        let ds = p * (${sumOver(hd4, (d) => `dot(${at("gs", ii, `${d}u`)}, ${v.at(d)})`)} - dds[r + ${ii}u]);
${unroll(pw, (d) => `dv${d} += p * ${at("gs", ii, col(d))};`, "        ")}
${unroll(pw, (d) => `dk${d} += ds * ${at("qs", ii, col(d))};`, "        ")}
      }`;
  // With an odd column split the last part's final columns lie past the head.
  const write = (d: number) => {
    const assign = span.first > 0 ? "+=" : "=";
    const line = `dqkv[(base + j) * W + ${kvColumn(s, 1)} + ${col(d)}] ${assign} dk${d} * SCALE;
    dqkv[(base + j) * W + ${kvColumn(s, 2)} + ${col(d)}] ${assign} dv${d};`;
    return parts * pw > hd4 && d === pw - 1 ? `if (${col(d)} < HD4) {\n    ${line}\n    }` : line;
  };
  const stageRows = (dst: string, src: (row: string, c: string) => string) =>
    stage(dst, tile.block, hd4, tile.threads, hd4, "i0", src).replaceAll("\n", "\n  ");
  const queryBlocks = `  for (var qb = j0 / ${tile.block}u; qb < ${nqb}u; qb++) {
    let i0 = qb * ${tile.block}u;
    workgroupBarrier();
  ${stageRows("qs", qkvAt(s, 0))}
  ${stageRows("gs", rowsAt("dout"))}
    if (lid < ${tile.block}u) {
      let row = bh * T + min(i0 + lid, T - 1u);
      ls[lid] = lse[row];
      dds[lid] = dd[row];
    }
    workgroupBarrier();
    // Chunks wholly before the block's first key or past the sequence see only masked queries.
    for (var c = (max(i0, j0) - i0) / ${CHUNK}u; c < min(${
    tile.block / CHUNK
  }u, (T - 1u - i0) / ${CHUNK}u + 1u); c++) {
      let r = c * ${CHUNK}u;
      let i1 = i0 + r;
      let o = r * HD4;
${unroll(CHUNK, perQuery, "      ")}
    }
  }`;
  // Grouped: the group's query heads in a loop around the query blocks, summing into dk and dv.
  const overQueries = grouped(s)
    ? `  for (var gh = ${span.first}u; gh < ${span.first + span.count}u; gh++) {
    let h = kvh * G + gh;
    let bh = b * H + h;
  ${queryBlocks.replaceAll("\n", "\n  ")}
  }`
    : queryBlocks;
  const perHead = chunkLoops(nqb, tile.block, CHUNK);
  return {
    name: "attention_flash_backward_kv",
    key: grouped(s) ? `${key(s, tile)}_g${span.first}_${span.count}` : key(s, tile),
    loops: grouped(s) ? span.count * (1 + perHead) : perHead,
    workgroups: grid(heads * nkb * parts),
    code: `${
      header(s, [
        ["qkv", "read", "vec4<f32>"],
        ["dout", "read", "vec4<f32>"],
        ["lse", "read", "f32"],
        ["dd", "read", "f32"],
        ["dqkv", "read_write", "vec4<f32>"],
      ])
    }
var<workgroup> qs: array<vec4<f32>, ${tile.block * hd4}>;
var<workgroup> gs: array<vec4<f32>, ${tile.block * hd4}>;
var<workgroup> ls: array<f32, ${tile.block}>;
var<workgroup> dds: array<f32, ${tile.block}>;
${k.decl}
${v.decl}
@compute @workgroup_size(${tile.threads})
fn main(${WGSL_GRID_PARAMS}) {
  let grp = ${WGSL_GROUP_INDEX};
  if (grp >= ${heads * nkb * parts}u) { return; }
  let ${grouped(s) ? "bkv" : "bh"} = (grp / ${parts}u) % ${heads}u;
  let j0 = (grp / ${parts * heads}u) * ${tile.threads}u;${
      parts > 1 ? `\n  let c0 = (grp % ${parts}u) * ${pw}u;` : ""
    }
${grouped(s) ? "  let b = bkv / HKV;\n  let kvh = bkv % HKV;" : "  let b = bh / H;\n  let h = bh % H;"}
  let base = b * T;
  let j = j0 + lid;
  let jc = min(j, T - 1u);
${k.load}
${v.load}
${unroll(pw, (d) => `var dk${d} = vec4<f32>();`)}
${unroll(pw, (d) => `var dv${d} = vec4<f32>();`)}
${overQueries}
  if (j < T) {
${unroll(pw, write, "    ")}
  }
}`,
  };
}
