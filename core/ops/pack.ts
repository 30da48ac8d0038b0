/**
 * Copies row-major matrices into rgba32float textures for kernels that read through textures on
 * software adapters (see kernels/matmul_packed.ts for why): a buffer-to-texture copy when the
 * contiguous dimension is a multiple of 64 floats (256-byte rows), a texture-to-texture transpose
 * when the other orientation is wanted, else a pack kernel that reads the buffer.
 */
import { FLAT_WIDTH, type Source } from "../../kernels/kernel.ts";
import { packKernel, transposePackKernel } from "../../kernels/matmul_packed.ts";
import { readsThroughTexture } from "../../kernels/select.ts";
import type { Binding, Gpu } from "../gpu.ts";
import type { TextureAllocation } from "../memory.ts";
import type { Tensor } from "../tensor.ts";

/** A matrix as stored: `rows` × `cols` per batch item, items `stride` elements apart. */
export interface Stored {
  /** The tensor holding it (row-major). */
  src: Tensor;
  /** Rows per batch item. */
  rows: number;
  /** Columns (the contiguous dimension). */
  cols: number;
  /** Elements between batch items. */
  stride: number;
}

/**
 * Packs `o` into a texture of `width` texels with `itemRows` texel rows per batch item, holding
 * the stored rows (transpose false: texel (x, y) = src[y][4x..]) or columns (transpose true:
 * texel (x, y) = src[4x..][y]).
 */
export function pack(
  gpu: Gpu,
  o: Stored,
  transpose: boolean,
  width: number,
  itemRows: number,
  batch: number,
  label: string,
): TextureAllocation {
  const { src, rows, cols, stride } = o;
  const tex = gpu.memory.allocTexture(width, batch * itemRows, "workspace", label);
  // Buffer-to-texture copies need 256-byte rows: 64 floats along the contiguous dimension.
  const copyable = cols % 64 === 0 && (batch === 1 || stride === rows * cols);
  if (copyable && !transpose) {
    if (itemRows === rows) {
      gpu.copyToTexture(src.buffer, src.byteOffset, cols * 4, tex.texture, 0, cols / 4, batch * rows);
    } else {
      for (let b = 0; b < batch; b++) {
        gpu.copyToTexture(
          src.buffer,
          src.byteOffset + b * stride * 4,
          cols * 4,
          tex.texture,
          b * itemRows,
          cols / 4,
          rows,
        );
      }
    }
  } else if (copyable && batch * rows <= gpu.info.limits.maxTextureDimension2D) {
    // The staging texture holds the stored rows as they are: GPT-2's 50257-row wte does not fit a
    // texture (16384 rows on lavapipe) and is packed from its buffer below instead.
    const staging = gpu.memory.allocTexture(cols / 4, batch * rows, "workspace", `${label}_rows`);
    gpu.copyToTexture(src.buffer, src.byteOffset, cols * 4, staging.texture, 0, cols / 4, batch * rows);
    gpu.dispatch(
      transposePackKernel(rows, cols, width, itemRows, batch),
      [staging.texture.createView(), tex.texture.createView()],
      [Math.ceil(width / 8), Math.ceil((batch * cols) / 4 / 8)],
    );
    gpu.memory.freeTexture(staging);
  } else {
    gpu.dispatch(
      packKernel(rows, cols, transpose ? "cols" : "rows", width, itemRows, batch, stride),
      [src.binding("matmul"), tex.texture.createView()],
      [Math.ceil(width / 8), Math.ceil((batch * itemRows) / 8)],
    );
  }
  return tex;
}

/** A tensor made readable for kernels built with `vec4Input`. */
export interface Vec4Input {
  /** What to bind. */
  binding: Binding;
  /** Where the kernel reads from (part of its key). */
  src: Source;
  /** Returns the texture copy, if any, to the pool (after the kernels using it are recorded). */
  done(): void;
}

/**
 * `t` as the input of a kernel reading `w` floats at a time (`vectorWidth` of its sizes): for vec4
 * reads on software adapters a texture copy (vec4 unit i at texel (i mod 1024, i div 1024)) when
 * `t` is big enough, else its buffer.
 */
export function vec4Input(t: Tensor, op: string, w: 1 | 4): Vec4Input {
  // Validate as a binding even when a texture copy is read, so limits fail the same on every adapter.
  const binding = t.binding(op);
  const gpu = t.gpu;
  const units = t.size / 4;
  const rows = Math.ceil(units / FLAT_WIDTH);
  const useTexture = readsThroughTexture(
    gpu.kernels,
    w,
    t.size,
    t.byteOffset,
    rows,
    gpu.info.limits.maxTextureDimension2D,
  );
  if (!useTexture) return { binding, src: "storage", done: () => {} };
  const tex = gpu.memory.allocTexture(FLAT_WIDTH, rows, "workspace", `${op}_input`);
  const full = Math.floor(units / FLAT_WIDTH);
  if (full > 0) gpu.copyToTexture(t.buffer, t.byteOffset, FLAT_WIDTH * 16, tex.texture, 0, FLAT_WIDTH, full);
  const rest = units - full * FLAT_WIDTH;
  if (rest > 0) {
    gpu.copyToTexture(t.buffer, t.byteOffset + full * FLAT_WIDTH * 16, rest * 16, tex.texture, full, rest, 1);
  }
  return { binding: tex.texture.createView(), src: "texture", done: () => gpu.memory.freeTexture(tex) };
}
