/**
 * Matmul C = op(A)·op(B), op = identity or transpose, batched with per-operand strides (stride 0
 * broadcasts a weight over the batch). Two variants share one description of the problem:
 * - `tiled` (GPUs): 64×64 output tiles staged through workgroup memory, 4×4 outputs per thread.
 * - `packed` (software adapters, see matmul_packed.ts): no workgroup memory, operands read through
 *   textures, because llvmpipe runs barriers slowly and storage-buffer loads one lane at a time.
 */
import type { Kernel } from "./kernel.ts";

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

const TILE = 64;
const BK = 16;

/** Workgroups for the tiled kernel. */
export function tiledGrid(s: MatmulShape): [number, number, number] {
  return [Math.ceil(s.n / TILE), Math.ceil(s.m / TILE), s.batch];
}

/** The workgroup-memory tiled kernel (binding 0: A, 1: B, 2: C, 3: bias if any). */
export function matmulTiledKernel(s: MatmulShape): Kernel {
  const { m, n, k } = s;
  // Element (row, col) of the logical operands, wherever the storage puts it.
  const aAt = s.transA ? `a[oa + kk * ${m}u + row]` : `a[oa + row * ${k}u + kk]`;
  const bAt = s.transB ? `b[ob + col * ${k}u + kk]` : `b[ob + kk * ${n}u + col]`;
  // Load order follows the contiguous dimension of each operand's storage.
  const aIdx = s.transA
    ? `let kk = k0 + e / ${TILE}u; let r = e % ${TILE}u;`
    : `let r = e / ${BK}u; let kk = k0 + e % ${BK}u;`;
  const bIdx = s.transB
    ? `let c = e / ${BK}u; let kk = k0 + e % ${BK}u;`
    : `let kk = k0 + e / ${TILE}u; let c = e % ${TILE}u;`;
  return {
    name: "matmul_tiled",
    key: matmulKey(s),
    loops: Math.ceil(k / BK) * (4 + BK * (4 + 4 + 4 * 5)) + 4 * 5,
    code: `@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> cm: array<f32>;
${s.bias ? "@group(0) @binding(3) var<storage, read> bias: array<f32>;" : ""}
var<workgroup> As: array<f32, ${BK * TILE}>;
var<workgroup> Bs: array<f32, ${BK * TILE}>;
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let oa = wid.z * ${s.strideA}u;
  let ob = wid.z * ${s.strideB}u;
  let oc = wid.z * ${m * n}u;
  let row0 = wid.y * ${TILE}u;
  let col0 = wid.x * ${TILE}u;
  let tid = lid.y * 16u + lid.x;
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < ${k}u; k0 += ${BK}u) {
    for (var i = 0u; i < 4u; i++) {
      let e = tid + i * 256u;
      {
        ${aIdx}
        let row = row0 + r;
        var v = 0.0;
        if (row < ${m}u && kk < ${k}u) { v = ${aAt}; }
        As[(kk - k0) * ${TILE}u + r] = v;
      }
      {
        ${bIdx}
        let col = col0 + c;
        var v = 0.0;
        if (col < ${n}u && kk < ${k}u) { v = ${bAt}; }
        Bs[(kk - k0) * ${TILE}u + c] = v;
      }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${BK}u; kk++) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        av[i] = As[kk * ${TILE}u + lid.y * 4u + i];
        bv[i] = Bs[kk * ${TILE}u + lid.x * 4u + i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) { acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]); }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let row = row0 + lid.y * 4u + i;
    for (var j = 0u; j < 4u; j++) {
      let col = col0 + lid.x * 4u + j;
      if (row < ${m}u && col < ${n}u) { cm[oc + row * ${n}u + col] = acc[i * 4u + j]${
      s.bias ? " + bias[col]" : ""
    }; }
    }
  }
}`,
  };
}
