/**
 * A block of columns copied between row-major matrices: `width` columns of each of `rows` rows from
 * `src` (row length `srcCols`, starting at column `srcOffset`) to `dst` (row length `dstCols`, from
 * column `dstOffset`). Concatenation along the last dimension is one copy per part; its backward is
 * the same copy the other way. vec4 units when every size and offset is a multiple of 4.
 */
import { elementwise } from "./elementwise.ts";
import type { Kernel } from "./kernel.ts";

/** Where a column block sits in a matrix: its row length and first column. */
export interface ColumnBlock {
  cols: number;
  offset: number;
}

/** dst[r, dst.offset + c] = src[r, src.offset + c] for r < rows, c < width. Bindings: src, dst. */
export function columnCopyKernel(rows: number, width: number, src: ColumnBlock, dst: ColumnBlock): Kernel {
  const w = [width, src.cols, src.offset, dst.cols, dst.offset].every((n) => n % 4 === 0) ? 4 : 1;
  const u = width / w;
  return elementwise(
    "column_copy",
    `r${rows}_c${width}_s${src.cols}+${src.offset}_d${dst.cols}+${dst.offset}`,
    rows * width,
    w,
    ["read> src: array<$T>", "read_write> dst: array<$T>"],
    `let r = i / ${u}u;
  let c = i % ${u}u;
  dst[r * ${dst.cols / w}u + ${dst.offset / w}u + c] = src[r * ${src.cols / w}u + ${src.offset / w}u + c];`,
  );
}
