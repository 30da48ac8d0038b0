/**
 * The one place that picks kernels. Two families:
 * - `gpu`: workgroup-memory tiles and workgroup reductions (subgroups where the device has them),
 *   built for GPUs with fast barriers and coalesced buffer loads;
 * - `software`: no barriers, operands read through textures, for software adapters (llvmpipe,
 *   SwiftShader), where barriers are slow and a buffer load costs a lane at a time.
 * The family is fixed per device (`LISA_KERNELS=gpu|software|auto`, default auto: software on a
 * software adapter); ops ask the functions below which variant fits their sizes and never test the
 * adapter themselves.
 */
import { MAX_LOOP_ITERATIONS } from "./kernel.ts";
import {
  type MatmulPlan,
  type MatmulShape,
  type MatmulTile,
  planFor,
  tiledWorkgroups,
  tileThreads,
  tileWorkgroupBytes,
} from "./matmul.ts";
import { type AttentionShape, qkvWidth } from "./attention.ts";
import {
  FLASH_MAX_HEAD_DIM,
  type FlashPass,
  type FlashPlan,
  type FlashTile,
  flashWorkgroupBytes,
} from "./attention_flash.ts";

/** A kernel family. */
export type KernelFamily = "gpu" | "software";

/** What a user may ask for: a family, or `auto` (from the adapter). */
export type KernelFamilySetting = KernelFamily | "auto";

/** The settings `LISA_KERNELS` accepts. */
export const KERNEL_FAMILY_SETTINGS: readonly KernelFamilySetting[] = ["auto", "gpu", "software"];

/** Parses a `LISA_KERNELS` value (unset or empty: auto); throws naming the variable on anything else. */
export function parseKernelFamily(value: string | undefined): KernelFamilySetting {
  if (value === undefined || value === "") return "auto";
  if ((KERNEL_FAMILY_SETTINGS as readonly string[]).includes(value)) return value as KernelFamilySetting;
  throw new Error(`LISA_KERNELS=${value}: expected one of ${KERNEL_FAMILY_SETTINGS.join(", ")}`);
}

/** The family a device uses: the setting, or under `auto` software exactly when the adapter is. */
export function resolveKernelFamily(setting: KernelFamilySetting, softwareAdapter: boolean): KernelFamily {
  if (setting !== "auto") return setting;
  return softwareAdapter ? "software" : "gpu";
}

/** Whether an adapter description names a software rasterizer. */
export function isSoftwareAdapter(description: string, fallback: boolean): boolean {
  return fallback || /llvmpipe|lavapipe|swiftshader|warp|software/i.test(description);
}

/** Smallest tensor worth a texture copy: below it the copy's fixed cost outweighs the cheaper reads. */
const FLAT_MIN_ELEMENTS = 1 << 14;

/**
 * Whether a kernel reading `t` (`size` floats at byte `byteOffset`) `w` floats at a time should
 * read a texture copy of it: software family only, vec4 reads, big enough, within `maxRows` rows.
 */
export function readsThroughTexture(
  family: KernelFamily,
  w: 1 | 4,
  size: number,
  byteOffset: number,
  rows: number,
  maxRows: number,
): boolean {
  return family === "software" && w === 4 && size % 4 === 0 && size >= FLAT_MIN_ELEMENTS &&
    rows <= maxRows && byteOffset % 16 === 0;
}

/** Matmul kernels: texture-read register blocks (software) or workgroup-memory tiles (GPUs). */
export type MatmulVariant = "tiled" | "packed";

/** The matmul variant for `s` in `family` (packed may still fall back to tiled when its textures do not fit). */
export function matmulVariant(family: KernelFamily, _s?: MatmulShape): MatmulVariant {
  return family === "software" ? "packed" : "tiled";
}

// Tiled-matmul tiles, most work per thread first. 8×8 outputs per thread read 4 floats of workgroup
// memory per 16 multiply-adds (4×4: per 8); the skinny tiles keep LoRA's rank-8 side from filling
// 112 of 128 columns with zeros.
const TILE_LARGE: MatmulTile = { bm: 128, bn: 128, bk: 16, tm: 8, tn: 8 };
const TILE_LARGE_BK8: MatmulTile = { ...TILE_LARGE, bk: 8 }; // fits WebGPU's default 16 KiB
const TILE_MEDIUM: MatmulTile = { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 };
const TILE_SKINNY_N: MatmulTile = { bm: 64, bn: 16, bk: 16, tm: 4, tn: 4 };
const TILE_SKINNY_M: MatmulTile = { bm: 16, bn: 64, bk: 16, tm: 4, tn: 4 };

/** Every tile {@link matmulPlan} may pick (tests run each). */
export const MATMUL_TILES: readonly MatmulTile[] = [
  TILE_LARGE,
  TILE_LARGE_BK8,
  TILE_MEDIUM,
  TILE_SKINNY_N,
  TILE_SKINNY_M,
];

// Workgroups that keep a large GPU busy: an H200 holds two 256-thread workgroups on each of its
// 132 SMs. Fewer output tiles than this split K, so long as each split keeps MIN_SPLIT_K of depth
// (shorter ones spend more on writing and summing partials than they gain).
const FILL_WORKGROUPS = 256;
const MIN_SPLIT_K = 256;

/** The device limits a tiled-matmul plan must respect. */
export interface MatmulLimits {
  /** Bytes of workgroup memory one workgroup may use. */
  maxComputeWorkgroupStorageSize: number;
  /** Threads one workgroup may have. */
  maxComputeInvocationsPerWorkgroup: number;
}

/**
 * The tiled kernel's plan for `s`: the skinny tile when M or N ≤ 16, else the 128×128 tile when
 * it fits the device and (with K split where K allows) fills the GPU, else 64×64; K is split when
 * the tiles alone are too few to fill the GPU, and always when one invocation would otherwise run
 * more than 65,535 k steps.
 */
export function matmulPlan(s: MatmulShape, limits: MatmulLimits): MatmulPlan {
  const shaped = s.n <= 16 ? [TILE_SKINNY_N] : s.m <= 16 ? [TILE_SKINNY_M] : [
    TILE_LARGE,
    TILE_LARGE_BK8,
    TILE_MEDIUM,
  ];
  const fits = shaped.filter((t) =>
    tileWorkgroupBytes(t) <= limits.maxComputeWorkgroupStorageSize &&
    tileThreads(t) <= limits.maxComputeInvocationsPerWorkgroup
  );
  if (fits.length === 0) {
    throw new Error(
      `matmul: no tile fits this device (${limits.maxComputeWorkgroupStorageSize} bytes of workgroup memory, ` +
        `${limits.maxComputeInvocationsPerWorkgroup} threads per workgroup)`,
    );
  }
  const plans = fits.map((t) => {
    const tiles = tiledWorkgroups(s, planFor(s, t));
    const needed = Math.ceil(s.k / (MAX_LOOP_ITERATIONS * t.bk));
    const wanted = tiles >= FILL_WORKGROUPS
      ? 1
      : Math.min(Math.ceil(FILL_WORKGROUPS / tiles), Math.floor(s.k / MIN_SPLIT_K));
    return planFor(s, t, Math.max(1, needed, wanted));
  });
  return plans.find((p) => tiledWorkgroups(s, p) >= FILL_WORKGROUPS) ?? plans[plans.length - 1];
}

/**
 * Fused attention kernels: `flash` (GPUs: blocks of queries or keys per workgroup, the other side
 * staged in workgroup memory), or one invocation per query or key reading `texture` copies of the
 * inputs (software adapters) or the `storage` buffers themselves.
 */
export type AttentionVariant = "flash" | "texture" | "storage";

/** The device limits attention's choice depends on. */
export interface AttentionLimits {
  /** Bytes of workgroup memory one workgroup may use. */
  maxComputeWorkgroupStorageSize: number;
  /** Largest texture side, texels. */
  maxTextureDimension2D: number;
}

/**
 * The fused attention variant for `s` in `family`: flash on GPUs where {@link flashPlan} finds blocks
 * (else storage); on software adapters textures when packed qkv rows and B·T fit a texture, else storage.
 */
export function attentionVariant(
  family: KernelFamily,
  s: AttentionShape,
  limits: AttentionLimits,
): AttentionVariant {
  if (family === "gpu") return flashPlan(s, limits) ? "flash" : "storage";
  const max = limits.maxTextureDimension2D;
  return qkvWidth(s) / 4 <= max && s.b * s.t <= max ? "texture" : "storage";
}

// Flash blocks, largest first: 64 threads (two NVIDIA warps) share each staged block; 16 only where
// nothing larger fits the workgroup memory. Staged blocks are multiples of the forward's 8-key chunk.
const FLASH_THREADS = [64, 32, 16];
const FLASH_BLOCKS = [32, 16, 8];

/**
 * The largest flash tiles of each pass within the device's workgroup memory; null when hd passes
 * {@link FLASH_MAX_HEAD_DIM} or some pass does not fit.
 */
export function flashPlan(
  s: AttentionShape,
  limits: Pick<AttentionLimits, "maxComputeWorkgroupStorageSize">,
): FlashPlan | null {
  if (s.hd > FLASH_MAX_HEAD_DIM || s.hd % 4 !== 0) return null;
  const fit = (pass: FlashPass): FlashTile | null => {
    for (const threads of FLASH_THREADS) {
      for (const block of FLASH_BLOCKS) {
        // The dK/dV pass stages lse and D with one thread per staged query.
        if (pass === "keyValue" && block > threads) continue;
        const tile = { threads, block };
        if (flashWorkgroupBytes(pass, s.hd, tile) <= limits.maxComputeWorkgroupStorageSize) return tile;
      }
    }
    return null;
  };
  const [forward, query, keyValue] = [fit("forward"), fit("query"), fit("keyValue")];
  return forward && query && keyValue ? { forward, query, keyValue } : null;
}

/** Most loop iterations a software-family invocation spends on one row, or one part of a sum. */
const SOFTWARE_SPAN = 16384;

/** Units a row of `c` floats is read in: vec4 when c divides by 4. */
function units(c: number): number {
  return c % 4 === 0 ? c / 4 : c;
}

/**
 * Invocations of a GPU-family workgroup reducing `units` items: a power of two from 32 (a warp) to
 * 256, about a quarter of the items, so each invocation has a few to load before reducing.
 */
export function workgroupThreads(units: number): number {
  let t = 32;
  while (t < 256 && t * 4 < units) t *= 2;
  return t;
}

/** A row kernel: one invocation per row, or one workgroup of `threads` per row. */
export type RowPlan =
  | { kind: "thread" }
  | { kind: "workgroup"; threads: number; subgroups: boolean };

/**
 * How cross-entropy's forward covers rows of `v` logits: GPU family, a workgroup per row; software,
 * an invocation per row while it is short, else per span of ≤ 4096 units of a row (`chunks` spans)
 * then a combine per row, so no invocation loops over a whole long vocabulary.
 */
export type XentRowsPlan = RowPlan | { kind: "chunks"; span: number; chunks: number };

/** The cross-entropy forward plan for rows of `v` logits (`subgroupSize` 0: the device has no subgroups). */
export function xentRowsPlan(family: KernelFamily, v: number, subgroupSize: number): XentRowsPlan {
  const u = units(v);
  if (family === "gpu") {
    return { kind: "workgroup", threads: workgroupThreads(u), subgroups: subgroupSize > 0 };
  }
  // Two passes over the row (max, then Σexp).
  if (2 * u <= SOFTWARE_SPAN) return { kind: "thread" };
  const span = Math.ceil(u / Math.ceil(u / 4096));
  return { kind: "chunks", span, chunks: Math.ceil(u / span) };
}

/**
 * The LayerNorm plan for rows of `c` floats: GPU family, a workgroup per row; software, an
 * invocation per row unless its three passes over the row would pass the loop limit.
 */
export function layerNormPlan(family: KernelFamily, c: number, subgroupSize: number): RowPlan {
  const u = units(c);
  if (family === "software" && 3 * u <= MAX_LOOP_ITERATIONS) return { kind: "thread" };
  return { kind: "workgroup", threads: workgroupThreads(u), subgroups: subgroupSize > 0 };
}

/**
 * One pass of a deterministic sum over n items into `parts` partials (1: the last pass): `spans`,
 * one invocation per part (software family); `blocks`, one workgroup of `threads` per part, each
 * invocation loading `perThread` items (GPU family).
 */
export type SumPass =
  | { kind: "spans"; parts: number }
  | { kind: "blocks"; threads: number; perThread: number; parts: number; subgroups: boolean };

/** The next pass of a sum over `n` items. */
export function sumPass(family: KernelFamily, n: number, subgroupSize: number): SumPass {
  if (family === "software") {
    // A short sum is cheapest in one invocation; a long one is spread over at least 1024 (both
    // cores busy, one short pass left to finish), more once each would loop past SOFTWARE_SPAN.
    return { kind: "spans", parts: n <= 4096 ? 1 : Math.max(1024, Math.ceil(n / SOFTWARE_SPAN)) };
  }
  const subgroups = subgroupSize > 0;
  if (n <= 8192) {
    const threads = workgroupThreads(n);
    return { kind: "blocks", threads, perThread: Math.ceil(n / threads), parts: 1, subgroups };
  }
  return { kind: "blocks", threads: 256, perThread: 16, parts: Math.ceil(n / 4096), subgroups };
}

/**
 * Rows of partials each output sums in a finishing pass of column sums over `rows` rows: software,
 * all of them in one pass while that stays short; GPU, 64 per pass for parallelism.
 */
export function columnPassRows(family: KernelFamily, rows: number): number {
  if (family === "software") return rows <= SOFTWARE_SPAN ? rows : 4096;
  return rows <= 256 ? rows : 64;
}

/**
 * Most positions (or partial rows) one invocation of the embedding backward sums: a token seen more
 * often is split into runs summed in further passes. Software keeps today's single pass for any
 * batch in use; GPUs split early, as a serial run leaves the device idle.
 */
export function embeddingRunSpan(family: KernelFamily): number {
  return family === "software" ? SOFTWARE_SPAN : 256;
}
