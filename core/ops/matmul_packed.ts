/**
 * Records a packed (texture) matmul: pack op(A) and op(B) into textures for the outer or dot core
 * (whichever transposes fewer elements), run it, free the textures (pooled; later users are ordered
 * after this read). An operand already in the core's orientation whose contiguous dimension is a
 * multiple of 64 floats is a plain buffer-to-texture copy; one that must be transposed is copied,
 * then transposed texture-to-texture; other sizes are packed from the buffer (slower on llvmpipe).
 */
import type { MatmulShape } from "../../kernels/matmul.ts";
import {
  packedDotKernel,
  packedFits,
  type PackedForm,
  packedGrid,
  packedLayout,
  packedOuterKernel,
} from "../../kernels/matmul_packed.ts";
import type { Tensor } from "../tensor.ts";
import { pack, type Stored } from "./pack.ts";

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
 * Records c = op(a)·op(b) (+ bias) for `s` with a packed core; `force` picks the form (tests).
 * Returns false, recording nothing, when no form fits the device's textures.
 */
export function runPacked(
  a: Tensor,
  b: Tensor,
  c: Tensor,
  s: MatmulShape,
  force?: PackedForm,
  bias?: Tensor,
): boolean {
  const gpu = a.gpu;
  const form = force ?? choosePackedForm(s, gpu.info.limits.maxTextureDimension2D);
  if (!form) return false;
  const l = packedLayout(s, form);
  const sa: Stored = { src: a, rows: s.transA ? s.k : s.m, cols: s.transA ? s.m : s.k, stride: s.strideA };
  const sb: Stored = { src: b, rows: s.transB ? s.n : s.k, cols: s.transB ? s.k : s.n, stride: s.strideB };
  // outer: X = k-major A (rows of the K×M form), Y = k-major B; dot: X = k-minor A, Y = k-minor B.
  const kMajor = form === "outer";
  const x = pack(gpu, sa, s.transA !== kMajor, l.xWidth, l.xRows, s.batch, "matmul_x");
  const y = pack(gpu, sb, s.transB === kMajor, l.yWidth, l.yRows, s.batch, "matmul_y");
  const core = form === "outer" ? packedOuterKernel(s) : packedDotKernel(s);
  const bindings = [x.texture.createView(), y.texture.createView(), c.binding("matmul")];
  gpu.dispatch(core, bias ? [...bindings, bias.binding("matmul")] : bindings, packedGrid(s));
  gpu.memory.freeTexture(x);
  gpu.memory.freeTexture(y);
  return true;
}
