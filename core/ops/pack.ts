/**
 * Copies row-major matrices into rgba32float textures for kernels that read through textures on
 * software adapters (see kernels/matmul_packed.ts for why): a buffer-to-texture copy when the
 * contiguous dimension is a multiple of 64 floats (256-byte rows), a texture-to-texture transpose
 * when the other orientation is wanted, else a pack kernel that reads the buffer.
 */
import { packKernel, transposePackKernel } from "../../kernels/matmul_packed.ts";
import type { Gpu } from "../gpu.ts";
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
  } else if (copyable) {
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
