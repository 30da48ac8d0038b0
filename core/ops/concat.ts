/** Concatenation along the last dimension (LLaMA's q, k, v into one packed row): forward and backward. */
import { columnCopyKernel } from "../../kernels/concat.ts";
import { needsGrad, record } from "../autograd.ts";
import { empty, type Tensor } from "../tensor.ts";
import { expectF32, expectSameGpu, fmt } from "./checks.ts";

/** The parts side by side along their last dimension; all other dimensions must agree. */
export function concatLast(parts: readonly Tensor[]): Tensor {
  if (parts.length === 0) throw new Error("concatLast: no tensors");
  for (const p of parts) {
    expectF32("concatLast", p);
    expectSameGpu("concatLast", parts[0], p);
  }
  const lead = parts[0].shape.slice(0, -1);
  for (const p of parts) {
    if (p.shape.length !== parts[0].shape.length || p.shape.slice(0, -1).some((d, i) => d !== lead[i])) {
      throw new Error(
        `concatLast: ${parts.map((q) => fmt(q.shape)).join(", ")} differ before the last dimension`,
      );
    }
  }
  const widths = parts.map((p) => p.shape[p.shape.length - 1]);
  const total = widths.reduce((a, b) => a + b, 0);
  const rows = parts[0].size / widths[0];
  const offsets = widths.map((_, i) => widths.slice(0, i).reduce((a, b) => a + b, 0));
  const gpu = parts[0].gpu;
  const y = empty(gpu, [...lead, total], { name: "concat" });
  parts.forEach((p, i) => {
    gpu.dispatch(
      columnCopyKernel(rows, widths[i], { cols: widths[i], offset: 0 }, { cols: total, offset: offsets[i] }),
      [p.binding("concat"), y.binding("concat")],
    );
  });
  // Linear: backward copies each part's columns of the gradient back out; nothing is saved.
  return record("concat", y, [...parts], [], (g) =>
    parts.map((p, i) => {
      if (!needsGrad(p)) return null;
      const dp = empty(gpu, p.shape, { name: "dconcat" });
      gpu.dispatch(
        columnCopyKernel(rows, widths[i], { cols: total, offset: offsets[i] }, {
          cols: widths[i],
          offset: 0,
        }),
        [g.binding("concat"), dp.binding("concat")],
      );
      return dp;
    }));
}
