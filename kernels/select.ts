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
import type { MatmulShape } from "./matmul.ts";

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

/** Where the fused attention kernels read q, k, v, O and dO from. */
export function attentionReadsTextures(
  family: KernelFamily,
  qkvWidth4: number,
  rows: number,
  maxTextureDimension2D: number,
): boolean {
  return family === "software" && qkvWidth4 <= maxTextureDimension2D && rows <= maxTextureDimension2D;
}
