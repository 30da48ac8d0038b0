/**
 * Records a packed (texture) matmul: pack op(A) and op(B) into textures for the outer or dot core
 * (whichever transposes fewer elements), run it, free the textures (pooled; later users are ordered
 * after this read). An operand already in the core's orientation whose contiguous dimension is a
 * multiple of 64 floats is a plain buffer-to-texture copy; one that must be transposed is copied,
 * then transposed texture-to-texture; other sizes are packed from the buffer (slower on llvmpipe).
 */
import { type MatmulShape, matmulTiledKernel, tiledGrid } from "../../kernels/matmul.ts";
import {
  packedDotKernel,
  packedFits,
  type PackedForm,
  packedGrid,
  packedLayout,
  packedOuterKernel,
  packKernel,
  transposePackKernel,
} from "../../kernels/matmul_packed.ts";
import type { Gpu } from "../gpu.ts";
import type { TextureAllocation } from "../memory.ts";
import type { Tensor } from "../tensor.ts";

/** One operand as stored: `rows` × `cols` per batch item, items `stride` elements apart. */
interface Stored {
  src: Tensor;
  rows: number;
  cols: number;
  stride: number;
}

/**
 * Packs `o` into a texture of `width` texels with `itemRows` texel rows per batch item, holding
 * the stored rows (transpose false: texel (x, y) = src[y][4x..]) or columns (transpose true:
 * texel (x, y) = src[4x..][y]).
 */
function pack(
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
    if (itemRows === rows) gpu.copyToTexture(src.buffer, 0, cols * 4, tex.texture, 0, cols / 4, batch * rows);
    else {
      for (let b = 0; b < batch; b++) {
        gpu.copyToTexture(src.buffer, b * stride * 4, cols * 4, tex.texture, b * itemRows, cols / 4, rows);
      }
    }
  } else if (copyable) {
    const staging = gpu.memory.allocTexture(cols / 4, batch * rows, "workspace", `${label}_rows`);
    gpu.copyToTexture(src.buffer, 0, cols * 4, staging.texture, 0, cols / 4, batch * rows);
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

// Measured on lavapipe (2 vCPUs): a transpose pack costs ~5.6 ns per element, and the dot core
// runs ~10% slower than the outer core (~23 GFLOP/s).
const TRANSPOSE_NS_PER_ELEMENT = 5.6;
const OUTER_CORE_FLOPS_PER_NS = 23;
const DOT_CORE_PENALTY = 0.1;

/**
 * The form to use: outer wants A and B k-major (A stored K×M, B stored K×N), dot wants them
 * k-minor; pick the one with the lower estimated time (transposes + core), among those whose
 * textures fit the device.
 */
export function choosePackedForm(s: MatmulShape, maxTextureDimension2D: number): PackedForm | null {
  const aSize = s.batch * s.m * s.k, bSize = s.batch * s.n * s.k;
  const core = (2 * s.batch * s.m * s.n * s.k) / OUTER_CORE_FLOPS_PER_NS;
  const cost = (f: PackedForm) =>
    f === "outer"
      ? ((s.transA ? 0 : aSize) + (s.transB ? bSize : 0)) * TRANSPOSE_NS_PER_ELEMENT
      : ((s.transA ? aSize : 0) + (s.transB ? 0 : bSize)) * TRANSPOSE_NS_PER_ELEMENT +
        DOT_CORE_PENALTY * core;
  const forms: PackedForm[] = cost("dot") < cost("outer") ? ["dot", "outer"] : ["outer", "dot"];
  return forms.find((f) => packedFits(s, f, maxTextureDimension2D)) ?? null;
}

/**
 * Records c = op(a)·op(b) for `s` with a packed core (the tiled kernel if no form fits the
 * textures); `force` picks the form (tests).
 */
export function runPacked(a: Tensor, b: Tensor, c: Tensor, s: MatmulShape, force?: PackedForm): void {
  const gpu = a.gpu;
  const form = force ?? choosePackedForm(s, gpu.info.limits.maxTextureDimension2D);
  if (!form) {
    gpu.dispatch(
      matmulTiledKernel(s),
      [a.binding("matmul"), b.binding("matmul"), c.binding("matmul")],
      tiledGrid(s),
    );
    return;
  }
  const l = packedLayout(s, form);
  const sa: Stored = { src: a, rows: s.transA ? s.k : s.m, cols: s.transA ? s.m : s.k, stride: s.strideA };
  const sb: Stored = { src: b, rows: s.transB ? s.n : s.k, cols: s.transB ? s.k : s.n, stride: s.strideB };
  // outer: X = k-major A (rows of the K×M form), Y = k-major B; dot: X = k-minor A, Y = k-minor B.
  const kMajor = form === "outer";
  const x = pack(gpu, sa, s.transA !== kMajor, l.xWidth, l.xRows, s.batch, "matmul_x");
  const y = pack(gpu, sb, s.transB === kMajor, l.yWidth, l.yRows, s.batch, "matmul_y");
  const core = form === "outer" ? packedOuterKernel(s) : packedDotKernel(s);
  gpu.dispatch(core, [x.texture.createView(), y.texture.createView(), c.binding("matmul")], packedGrid(s));
  gpu.memory.freeTexture(x);
  gpu.memory.freeTexture(y);
}
