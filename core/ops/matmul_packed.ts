/** Packed (texture) matmul for software adapters: placeholder until the kernel lands. */
import { type MatmulShape, matmulTiledKernel, tiledGrid } from "../../kernels/matmul.ts";
import type { Tensor } from "../tensor.ts";

/** Records c = op(a)·op(b) with the packed kernel. */
export function runPacked(a: Tensor, b: Tensor, c: Tensor, s: MatmulShape): void {
  a.gpu.dispatch(
    matmulTiledKernel(s),
    [a.binding("matmul"), b.binding("matmul"), c.binding("matmul")],
    tiledGrid(s),
  );
}
