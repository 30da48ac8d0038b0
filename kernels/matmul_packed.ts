/**
 * Packed matmul for software adapters (llvmpipe/lavapipe). Measured there (experiments/bench.ts):
 * storage-buffer loads cost ~5 ns per lane-element and workgroup barriers are slow, while reads of
 * rgba32float *read-only storage textures* are gathered 8 lanes at a time, about 2× faster than
 * sampled textureLoad. So operands are first packed into textures laid out for one of two cores,
 * each invocation computing an 8×8 tile of C (64 accumulators: fewer need more fetches, more spill):
 * - `outer`: X texel (m4, k) = A[4m4 .. 4m4+3][k], Y texel (n4, k) = B[k][4n4 .. 4n4+3]; per k a
 *   rank-1 update with vec4 accumulators. Operands stored k-major (Aᵀ, B) pack by plain copy.
 * - `dot`: X texel (k4, m) = A[m][4k4 .. 4k4+3], Y texel (k4, n) = B[4k4 .. 4k4+3][n]; per k4 a
 *   4-wide dot product per output. Operands stored k-minor (A, Bᵀ) pack by plain copy.
 * The op picks the form that transposes fewer elements. Batch items are stacked along y.
 */
import type { Kernel } from "./kernel.ts";
import type { MatmulShape } from "./matmul.ts";

/** Outputs per invocation (rows TM × columns TN) and invocations per workgroup (WX × WY). */
export const PACKED_TILE = { TM: 8, TN: 8, WX: 8, WY: 8 } as const;

/** Rows of C covered per workgroup row, and columns per workgroup column. */
const ROWS_PER_WG = PACKED_TILE.TM * PACKED_TILE.WY;
const COLS_PER_WG = PACKED_TILE.TN * PACKED_TILE.WX;

/** The two cores. */
export type PackedForm = "outer" | "dot";

/** Texture sizes of a form: widths in texels (+1 breaks power-of-two row strides), rows per batch item. */
export interface PackedLayout {
  /** M and N rounded up to whole workgroup tiles. */
  mp: number;
  np: number;
  /** K rounded up to a multiple of 4 (dot form reads k in fours). */
  kp: number;
  xWidth: number;
  yWidth: number;
  /** Texel rows per batch item in X and Y. */
  xRows: number;
  yRows: number;
}

/** The layout of `form` for `s`. */
export function packedLayout(s: MatmulShape, form: PackedForm): PackedLayout {
  const mp = Math.ceil(s.m / ROWS_PER_WG) * ROWS_PER_WG;
  const np = Math.ceil(s.n / COLS_PER_WG) * COLS_PER_WG;
  const kp = Math.ceil(s.k / 4) * 4;
  return form === "outer"
    ? { mp, np, kp, xWidth: mp / 4 + 1, yWidth: np / 4 + 1, xRows: s.k, yRows: s.k }
    : { mp, np, kp, xWidth: kp / 4 + 1, yWidth: kp / 4 + 1, xRows: mp, yRows: np };
}

/** Whether `form` can run `s` within a device's texture size limit. */
export function packedFits(s: MatmulShape, form: PackedForm, maxTextureDimension2D: number): boolean {
  const l = packedLayout(s, form);
  return Math.max(l.xWidth, l.yWidth, s.batch * l.xRows, s.batch * l.yRows) <= maxTextureDimension2D;
}

/** Workgroups of either core. */
export function packedGrid(s: MatmulShape): [number, number, number] {
  const l = packedLayout(s, "outer");
  return [l.np / COLS_PER_WG, l.mp / ROWS_PER_WG, s.batch];
}

/** Output and bias declarations (bindings 2 and 3): vec4 arrays when the problem is tile-aligned. */
function outputDecls(s: MatmulShape, aligned: boolean): string {
  const t = aligned ? "vec4<f32>" : "f32";
  return `@group(0) @binding(2) var<storage, read_write> C: array<${t}>;
${s.bias ? `@group(0) @binding(3) var<storage, read> bias: array<${t}>;` : ""}`;
}

/** Stores of an 8×8 tile (plus the bias): vec4 when the problem is tile-aligned, else guarded scalars. */
function storeTile(s: MatmulShape, aligned: boolean, value: (i: number, j: number) => string): string[] {
  const { m, n } = s;
  const out: string[] = [];
  for (let i = 0; i < PACKED_TILE.TM; i++) {
    for (let j = 0; j < PACKED_TILE.TN / 4; j++) {
      if (aligned) {
        out.push(
          `  C[oc / 4u + (m0 + ${i}u) * ${n / 4}u + n4 + ${j}u] = ${value(i, j)}${
            s.bias ? ` + bias[n4 + ${j}u]` : ""
          };`,
        );
        continue;
      }
      out.push(`  if (m0 + ${i}u < ${m}u) {`, `    let v = ${value(i, j)};`);
      for (let q = 0; q < 4; q++) {
        const col = `(n4 + ${j}u) * 4u + ${q}u`;
        out.push(
          `    if (${col} < ${n}u) { C[oc + (m0 + ${i}u) * ${n}u + ${col}] = v[${q}]${
            s.bias ? ` + bias[${col}]` : ""
          }; }`,
        );
      }
      out.push("  }");
    }
  }
  return out;
}

function isAligned(s: MatmulShape): boolean {
  return s.n % 4 === 0 && s.m % ROWS_PER_WG === 0 && s.n % COLS_PER_WG === 0;
}

/** The dot core: C[z][m][n] = Σ_k4 X(k4, m)·Y(k4, n) (+ bias[n]) (bindings: X, Y, C, bias). */
export function packedDotKernel(s: MatmulShape): Kernel {
  const { m, n } = s;
  const { TM, TN, WX, WY } = PACKED_TILE;
  const l = packedLayout(s, "dot");
  const aligned = isAligned(s);
  const decl: string[] = [];
  const body: string[] = [];
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) decl.push(`  var c${i}_${j} = 0.0;`);
  for (let i = 0; i < TM; i++) body.push(`    let a${i} = textureLoad(X, vec2<u32>(k4, xo + ${i}u));`);
  for (let j = 0; j < TN; j++) body.push(`    let b${j} = textureLoad(Y, vec2<u32>(k4, yo + ${j}u));`);
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) body.push(`    c${i}_${j} += dot(a${i}, b${j});`);
  const tile = (i: number, j: number) =>
    `vec4<f32>(${[0, 1, 2, 3].map((q) => `c${i}_${4 * j + q}`).join(", ")})`;
  return {
    name: "matmul_packed_dot",
    key: `${s.batch}x${m}x${n}x${s.k}${s.bias ? "_bias" : ""}`,
    loops: l.kp / 4,
    code: `@group(0) @binding(0) var X: texture_storage_2d<rgba32float, read>;
@group(0) @binding(1) var Y: texture_storage_2d<rgba32float, read>;
${outputDecls(s, aligned)}
@compute @workgroup_size(${WX}, ${WY})
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let n4 = g.x * ${TN / 4}u;
  let m0 = g.y * ${TM}u;
  let oc = g.z * ${m * n}u;
  let xo = g.z * ${l.xRows}u + m0;
  let yo = g.z * ${l.yRows}u + n4 * 4u;
${decl.join("\n")}
  for (var k4 = 0u; k4 < ${l.kp / 4}u; k4++) {
${body.join("\n")}
  }
${storeTile(s, aligned, tile).join("\n")}
}`,
  };
}

/** The outer core: C[z] = X[z]ᵀ·Y[z] (+ bias) from packed textures (bindings: X, Y, C, bias). */
export function packedOuterKernel(s: MatmulShape): Kernel {
  const { m, n, k } = s;
  const { TM, TN, WX, WY } = PACKED_TILE;
  const TM4 = TM / 4, TN4 = TN / 4;
  const aligned = isAligned(s);
  const lines: string[] = [];
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN4; j++) lines.push(`  var c${i}_${j} = vec4<f32>();`);
  const body: string[] = [];
  for (let i = 0; i < TM4; i++) body.push(`    let a${i} = textureLoad(X, vec2<u32>(m4 + ${i}u, y));`);
  for (let j = 0; j < TN4; j++) body.push(`    let b${j} = textureLoad(Y, vec2<u32>(n4 + ${j}u, y));`);
  for (let i = 0; i < TM; i++) {
    for (let j = 0; j < TN4; j++) {
      body.push(`    c${i}_${j} = fma(vec4<f32>(a${i >> 2}[${i & 3}]), b${j}, c${i}_${j});`);
    }
  }
  const store = storeTile(s, aligned, (i, j) => `c${i}_${j}`);
  return {
    name: "matmul_packed_outer",
    key: `${s.batch}x${m}x${n}x${k}${s.bias ? "_bias" : ""}`,
    loops: k,
    code: `@group(0) @binding(0) var X: texture_storage_2d<rgba32float, read>;
@group(0) @binding(1) var Y: texture_storage_2d<rgba32float, read>;
${outputDecls(s, aligned)}
@compute @workgroup_size(${WX}, ${WY})
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let n4 = g.x * ${TN4}u;
  let m4 = g.y * ${TM4}u;
  let m0 = m4 * 4u;
  let oc = g.z * ${m * n}u;
${lines.join("\n")}
  for (var k = 0u; k < ${k}u; k++) {
    let y = g.z * ${k}u + k;
${body.join("\n")}
  }
${store.join("\n")}
}`,
  };
}

/**
 * Packs `batch` items of a row-major rows×cols matrix (item b at element b·stride) into a texture
 * of `width` texels, item b starting at texel row b·itemRows, zero-padded:
 * - `rows`: texel (x, y) = src[y][4x .. 4x+3]   (no transpose; y < rows)
 * - `cols`: texel (x, y) = src[4x .. 4x+3][y]   (transpose; y < cols)
 */
export function packKernel(
  rows: number,
  cols: number,
  mode: "rows" | "cols",
  width: number,
  itemRows: number,
  batch: number,
  stride: number,
): Kernel {
  const at = (r: string, c: string) =>
    `select(0.0, S[min(o + (${r}) * ${cols}u + (${c}), ${
      (batch - 1) * stride + rows * cols - 1
    }u)], (${r}) < ${rows}u && (${c}) < ${cols}u)`;
  const comp = (q: number) => (mode === "rows" ? at("y", `4u * x + ${q}u`) : at(`4u * x + ${q}u`, "y"));
  return {
    name: "matmul_pack",
    key: `${batch}x${rows}x${cols}_${mode}_w${width}_r${itemRows}_s${stride}`,
    loops: 0,
    code: `@group(0) @binding(0) var<storage, read> S: array<f32>;
@group(0) @binding(1) var T: texture_storage_2d<rgba32float, write>;
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let x = g.x;
  if (x >= ${width}u || g.y >= ${batch * itemRows}u) { return; }
  let b = g.y / ${itemRows}u;
  let y = g.y % ${itemRows}u;
  let o = b * ${stride}u;
  textureStore(T, vec2<u32>(x, g.y), vec4<f32>(${[0, 1, 2, 3].map(comp).join(", ")}));
}`,
  };
}

/**
 * Transposes a texture holding row-major data (texel (c4, r) = src[r][4c4 .. 4c4+3], `rows` ×
 * `cols` per batch item, items stacked along y) into the column-grouped layout (texel (r4, c) =
 * src[4r4 .. 4r4+3][c], item b from texel row b·itemRows). One invocation moves a 4×4 block: 4
 * texture reads and 4 writes for 16 values, cheaper on llvmpipe than reading the storage buffer.
 */
export function transposePackKernel(
  rows: number,
  cols: number,
  width: number,
  itemRows: number,
  batch: number,
): Kernel {
  const c4s = cols / 4;
  return {
    name: "matmul_transpose_pack",
    key: `${batch}x${rows}x${cols}_w${width}_r${itemRows}`,
    loops: 4,
    code: `@group(0) @binding(0) var I: texture_storage_2d<rgba32float, read>;
@group(0) @binding(1) var T: texture_storage_2d<rgba32float, write>;
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let x = g.x;
  if (x >= ${width}u || g.y >= ${batch * c4s}u) { return; }
  let b = g.y / ${c4s}u;
  let c4 = g.y % ${c4s}u;
  var q: array<vec4<f32>, 4>;
  for (var i = 0u; i < 4u; i++) {
    let r = 4u * x + i;
    if (r < ${rows}u) { q[i] = textureLoad(I, vec2<u32>(c4, b * ${rows}u + r)); } else { q[i] = vec4<f32>(); }
  }
  let y0 = b * ${itemRows}u + 4u * c4;
  textureStore(T, vec2<u32>(x, y0), vec4<f32>(q[0].x, q[1].x, q[2].x, q[3].x));
  textureStore(T, vec2<u32>(x, y0 + 1u), vec4<f32>(q[0].y, q[1].y, q[2].y, q[3].y));
  textureStore(T, vec2<u32>(x, y0 + 2u), vec4<f32>(q[0].z, q[1].z, q[2].z, q[3].z));
  textureStore(T, vec2<u32>(x, y0 + 3u), vec4<f32>(q[0].w, q[1].w, q[2].w, q[3].w));
}`,
  };
}
