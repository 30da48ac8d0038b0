/**
 * Matmul C = op(A)·op(B), op = identity or transpose, batched with per-operand strides (stride 0
 * broadcasts a weight over the batch). Two variants share one description of the problem:
 * - `tiled` (GPUs): register-blocked tiles staged through workgroup memory (this file), optionally
 *   with K split over workgroups (matmul_splitk.ts); kernels/select.ts picks the tile and split.
 * - `packed` (software adapters, see matmul_packed.ts): no workgroup memory, operands read through
 *   textures, because llvmpipe runs barriers slowly and storage-buffer loads one lane at a time.
 */
import { floatType, grid, type Kernel, vectorWidth, WGSL_GRID_PARAMS, WGSL_GROUP_INDEX } from "./kernel.ts";

/** The matmul problem: logical sizes, storage orientation, batch and strides (elements). */
export interface MatmulShape {
  /** Rows of C. */
  m: number;
  /** Columns of C. */
  n: number;
  /** Inner dimension. */
  k: number;
  /** Number of independent products. */
  batch: number;
  /** A is stored K×M (we use its transpose). */
  transA: boolean;
  /** B is stored N×K. */
  transB: boolean;
  /** Elements between consecutive batch items of A (0: shared). */
  strideA: number;
  /** Elements between consecutive batch items of B (0: shared). */
  strideB: number;
  /** Add a bias over columns (C[.., n] += bias[n]; binding 3). */
  bias?: boolean;
}

/** Short key naming a shape in kernel caches and errors. */
export function matmulKey(s: MatmulShape): string {
  return `${s.batch}x${s.m}x${s.n}x${s.k}_t${+s.transA}${+s.transB}_s${s.strideA}_${s.strideB}${
    s.bias ? "_bias" : ""
  }`;
}

/**
 * A workgroup's share of C in the tiled kernel: a bm×bn block of C, built from bk-deep slices of
 * A and B staged in workgroup memory; each thread owns tm×tn outputs (tm, tn: 4 or 8).
 */
export interface MatmulTile {
  /** Rows of C per workgroup. */
  bm: number;
  /** Columns of C per workgroup. */
  bn: number;
  /** Depth of one K step (a multiple of 4). */
  bk: number;
  /** Rows of C per thread. */
  tm: number;
  /** Columns of C per thread. */
  tn: number;
}

/** How the tiled kernel runs one problem: its tile, and K cut into `splits` ranges of `kPerSplit`. */
export interface MatmulPlan {
  /** The workgroup tile. */
  tile: MatmulTile;
  /** Workgroups along K (1: none); their partial products go to a workspace and are summed after. */
  splits: number;
  /** K per split, a multiple of tile.bk (the last split may be shorter). */
  kPerSplit: number;
}

/** Threads per workgroup of `t`. */
export function tileThreads(t: MatmulTile): number {
  return (t.bm / t.tm) * (t.bn / t.tn);
}

// Workgroup-memory rows are padded by one vec4: the transposing scalar stores of a k-contiguous
// operand then conflict 2-way instead of 4-way (rows must stay vec4-aligned, so no pad does better).
const PAD4 = 1;

/** Bytes of workgroup memory `t` uses (A and B slices, k-major, padded rows). */
export function tileWorkgroupBytes(t: MatmulTile): number {
  return t.bk * (t.bm / 4 + PAD4 + t.bn / 4 + PAD4) * 16;
}

/** The plan running `s` with `tile` and about `splits` K ranges (fewer when K's tiles do not go round). */
export function planFor(s: MatmulShape, tile: MatmulTile, splits = 1): MatmulPlan {
  const kTiles = Math.ceil(s.k / tile.bk);
  const kPerSplit = Math.ceil(kTiles / Math.max(1, Math.min(splits, kTiles))) * tile.bk;
  return { tile, splits: Math.ceil(s.k / kPerSplit), kPerSplit };
}

/** Workgroups the tiled kernel runs for `s` under `plan`. */
export function tiledWorkgroups(s: MatmulShape, plan: MatmulPlan): number {
  const t = plan.tile;
  return Math.ceil(s.m / t.bm) * Math.ceil(s.n / t.bn) * s.batch * plan.splits;
}

/** Workgroup counts for {@link matmulTiledKernel}. */
export function tiledGrid(s: MatmulShape, plan: MatmulPlan): [number, number] {
  return grid(tiledWorkgroups(s, plan));
}

function checkTile(t: MatmulTile, w: { a: 1 | 4; b: 1 | 4 }): void {
  const threads = tileThreads(t);
  const ok = [t.tm, t.tn].every((x) => x === 4 || x === 8) && t.bm % t.tm === 0 && t.bn % t.tn === 0 &&
    t.bk % 4 === 0 && (t.bm * t.bk) % (w.a * threads) === 0 && (t.bn * t.bk) % (w.b * threads) === 0;
  if (!ok) {
    throw new Error(`matmul: tile ${JSON.stringify(t)} cannot be laid out over its ${threads} threads`);
  }
}

/** One input's slice loader: global → registers (prefetch) → workgroup memory (k-major). */
interface Operand {
  /** Buffer, workgroup array and register prefix. */
  buf: string;
  shared: string;
  reg: string;
  /** Output-dimension size (M or N), tile rows along it, and the first one of this workgroup. */
  dim: number;
  rows: number;
  origin: string;
  /** Whether storage runs along K (A not transposed, B transposed). */
  kContiguous: boolean;
  /** Floats per load. */
  w: 1 | 4;
  /** This batch item's offset in `w` units. */
  offset: string;
}

/** Registers per thread of an operand slice. */
function regs(o: Operand, t: MatmulTile): number {
  return (o.rows * t.bk) / (o.w * tileThreads(t));
}

/**
 * WGSL naming this thread's register `p` of the slice: `x` (position along the output dimension
 * within the tile) and `kr` (depth within the slice) of its first float.
 */
function slot(o: Operand, t: MatmulTile, p: number): string {
  const e = `lid + ${p * tileThreads(t)}u`;
  if (o.kContiguous) {
    const per = t.bk / o.w;
    return `let x = (${e}) / ${per}u; let kr = ((${e}) % ${per}u) * ${o.w}u;`;
  }
  const per = o.rows / o.w;
  return `let kr = (${e}) / ${per}u; let x = ((${e}) % ${per}u) * ${o.w}u;`;
}

/** WGSL loading the slice at depth `k0` into the registers (zeros outside the matrix or K range). */
function load(o: Operand, t: MatmulTile, k: number): string[] {
  const lines: string[] = [];
  for (let p = 0; p < regs(o, t); p++) {
    const at = o.kContiguous
      ? `${o.offset} + g * ${k / o.w}u + kk / ${o.w}u`
      : `${o.offset} + kk * ${o.dim / o.w}u + g / ${o.w}u`;
    const zero = `${floatType(o.w)}()`;
    lines.push(`{ ${slot(o, t, p)} let g = ${o.origin} + x; let kk = k0 + kr;`);
    lines.push(
      `  ${o.reg}${p} = ${zero}; if (g < ${o.dim}u && kk < kEnd) { ${o.reg}${p} = ${o.buf}[${at}]; } }`,
    );
  }
  return lines;
}

/** WGSL storing the registers into the k-major workgroup slice. */
function store(o: Operand, t: MatmulTile): string[] {
  const lines: string[] = [];
  for (let p = 0; p < regs(o, t); p++) {
    const r = `${o.reg}${p}`;
    const scalar = (kr: string, v: string) => `${o.shared}[${kr}][x / 4u][x % 4u] = ${v};`;
    const body = o.w === 1
      ? scalar("kr", r)
      : o.kContiguous
      ? ["x", "y", "z", "w"].map((c, i) => scalar(`kr + ${i}u`, `${r}.${c}`)).join(" ")
      : `${o.shared}[kr][x / 4u] = ${r};`;
    lines.push(`{ ${slot(o, t, p)} ${body} }`);
  }
  return lines;
}

const LANES = ["x", "y", "z", "w"];

/** WGSL of one unrolled depth step: tm×tn fused multiply-adds from 4-wide workgroup reads. */
function step(t: MatmulTile, kr: number): string {
  const lines: string[] = [];
  for (let f = 0; f < t.tm / 4; f++) lines.push(`let a${f} = As[${kr}][ty + ${(f * t.bm) / t.tm}u];`);
  for (let g = 0; g < t.tn / 4; g++) lines.push(`let b${g} = Bs[${kr}][tx + ${(g * t.bn) / t.tn}u];`);
  for (let i = 0; i < t.tm; i++) {
    const a = `vec4<f32>(a${i >> 2}.${LANES[i & 3]})`;
    for (let g = 0; g < t.tn / 4; g++) lines.push(`c${i}_${g} = fma(${a}, b${g}, c${i}_${g});`);
  }
  return `{ ${lines.join(" ")} }`;
}

/** WGSL writing the accumulators (plus bias) to C with guards on rows and columns. */
function epilogue(s: MatmulShape, t: MatmulTile, wc: 1 | 4): string {
  const { m, n } = s;
  const bias = (col: string) => s.bias ? ` + bias[${col}]` : "";
  const lines: string[] = [];
  for (let i = 0; i < t.tm; i++) {
    const row = `row0 + (ty + ${((i >> 2) * t.bm) / t.tm}u) * 4u + ${i & 3}u`;
    const cols: string[] = [];
    for (let g = 0; g < t.tn / 4; g++) {
      const col = `col0 + (tx + ${(g * t.bn) / t.tn}u) * 4u`;
      if (wc === 4) {
        cols.push(
          `{ let col = ${col}; if (col < ${n}u) { cm[oc + row * ${n / 4}u + col / 4u] = c${i}_${g}${
            bias("col / 4u")
          }; } }`,
        );
      } else {
        for (let j = 0; j < 4; j++) {
          cols.push(
            `{ let col = ${col} + ${j}u; if (col < ${n}u) { cm[oc + row * ${n}u + col] = c${i}_${g}.${
              LANES[j]
            }${bias("col")}; } }`,
          );
        }
      }
    }
    lines.push(`{ let row = ${row}; if (row < ${m}u) {\n    ${cols.join("\n    ")}\n  } }`);
  }
  return lines.join("\n  ");
}

/**
 * The register-blocked tiled kernel for `s` under `plan` (binding 0: A, 1: B, 2: C or, when K is
 * split, the partials [splits, batch, M, N]; 3: bias, only when not split). Each k step stores the
 * prefetched slices to workgroup memory, then loads the next ones while computing on these, so one
 * barrier pair covers bk depth. Loads are 4 floats wide where the operand's contiguous size and
 * batch stride divide by 4; only the k-step loop is a runtime loop.
 */
export function matmulTiledKernel(s: MatmulShape, plan: MatmulPlan): Kernel {
  const { m, n, k, batch } = s;
  const t = plan.tile;
  if (s.bias && plan.splits > 1) {
    throw new Error("matmul: a split-K kernel writes partials; the reduce adds bias");
  }
  const wa = vectorWidth(s.transA ? m : k, s.strideA);
  const wb = vectorWidth(s.transB ? k : n, s.strideB);
  const wc = vectorWidth(n);
  checkTile(t, { a: wa, b: wb });
  const threads = tileThreads(t);
  const tilesM = Math.ceil(m / t.bm), tilesN = Math.ceil(n / t.bn);
  const A: Operand = {
    buf: "a",
    shared: "As",
    reg: "pa",
    dim: m,
    rows: t.bm,
    origin: "row0",
    kContiguous: !s.transA,
    w: wa,
    offset: "oa",
  };
  const B: Operand = {
    buf: "b",
    shared: "Bs",
    reg: "pb",
    dim: n,
    rows: t.bn,
    origin: "col0",
    kContiguous: s.transB,
    w: wb,
    offset: "ob",
  };
  const decl = (o: Operand) =>
    Array.from({ length: regs(o, t) }, (_, p) => `var ${o.reg}${p}: ${floatType(o.w)};`).join(" ");
  const acc: string[] = [];
  for (let i = 0; i < t.tm; i++) for (let g = 0; g < t.tn / 4; g++) acc.push(`var c${i}_${g}: vec4<f32>;`);
  const compute = Array.from({ length: t.bk }, (_, kr) => step(t, kr));
  const loads = [...load(A, t, k), ...load(B, t, k)];
  // Groups of GROUP_M tile rows run side by side so their A and B slices are reused from cache.
  const GROUP_M = 8;
  const split = plan.splits > 1;
  return {
    name: "matmul_tiled",
    key: `${matmulKey(s)}_T${t.bm}x${t.bn}x${t.bk}_${t.tm}x${t.tn}_S${plan.splits}x${plan.kPerSplit}`,
    loops: plan.kPerSplit / t.bk,
    code: `@group(0) @binding(0) var<storage, read> a: array<${floatType(wa)}>;
@group(0) @binding(1) var<storage, read> b: array<${floatType(wb)}>;
@group(0) @binding(2) var<storage, read_write> cm: array<${floatType(wc)}>;
${s.bias ? `@group(0) @binding(3) var<storage, read> bias: array<${floatType(wc)}>;` : ""}
var<workgroup> As: array<array<vec4<f32>, ${t.bm / 4 + PAD4}>, ${t.bk}>;
var<workgroup> Bs: array<array<vec4<f32>, ${t.bn / 4 + PAD4}>, ${t.bk}>;
@compute @workgroup_size(${threads})
fn main(${WGSL_GRID_PARAMS}) {
  let gi = ${WGSL_GROUP_INDEX};
  if (gi >= ${tiledWorkgroups(s, plan)}u) { return; }
  let z = gi / ${tilesM * tilesN}u;
  let ti = gi % ${tilesM * tilesN}u;
  let first = (ti / ${GROUP_M * tilesN}u) * ${GROUP_M}u;
  let rowsInGroup = min(${tilesM}u - first, ${GROUP_M}u);
  let inGroup = ti % ${GROUP_M * tilesN}u;
  let row0 = (first + inGroup % rowsInGroup) * ${t.bm}u;
  let col0 = (inGroup / rowsInGroup) * ${t.bn}u;
  let item = z % ${batch}u;
  let oa = item * ${s.strideA / wa}u;
  let ob = item * ${s.strideB / wb}u;
  let oc = z * ${(m * n) / wc}u;
  let kBegin = ${split ? `(z / ${batch}u) * ${plan.kPerSplit}u` : "0u"};
  let kEnd = ${split ? `min(${k}u, kBegin + ${plan.kPerSplit}u)` : `${k}u`};
  let ty = lid / ${t.bn / t.tn}u;
  let tx = lid % ${t.bn / t.tn}u;
  ${decl(A)}
  ${decl(B)}
  ${acc.join(" ")}
  var k0 = kBegin;
  ${loads.join("\n  ")}
  let nk = (kEnd - kBegin + ${t.bk - 1}u) / ${t.bk}u;
  for (var kt = 0u; kt < nk; kt++) {
    ${[...store(A, t), ...store(B, t)].join("\n    ")}
    workgroupBarrier();
    k0 += ${t.bk}u;
    ${[...loads, ...compute].join("\n    ")}
    workgroupBarrier();
  }
  ${epilogue(s, t, wc)}
}`,
  };
}
