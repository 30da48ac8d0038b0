/** RMSNorm (LLaMA's) over the last dimension: forward and backward (dx, dw). */
import { vectorWidth } from "../../kernels/kernel.ts";
import { COLUMN_CHUNK } from "../../kernels/reduce.ts";
import {
  rmsNormBackwardGpuKernel,
  rmsNormBackwardKernel,
  rmsNormForwardGpuKernel,
  rmsNormForwardKernel,
  rmsNormWeightPartialsKernel,
} from "../../kernels/rmsnorm.ts";
import { layerNormPlan } from "../../kernels/select.ts";
import { needsGrad, record } from "../autograd.ts";
import { empty, type Tensor, withCategory } from "../tensor.ts";
import { expectF32, expectSameGpu, fmt } from "./checks.ts";
import { vec4Input } from "./pack.ts";
import { finishColumns } from "./reduce.ts";

/**
 * x · rsqrt(mean(x²) + eps) · weight over x's last dimension (Hugging Face's LlamaRMSNorm); weight
 * has that size, eps comes from the model's config (`rms_norm_eps`).
 */
export function rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
  for (const t of [x, weight]) expectF32("rmsNorm", t);
  expectSameGpu("rmsNorm", x, weight);
  const c = x.shape[x.shape.length - 1];
  if (weight.size !== c) {
    throw new Error(
      `rmsNorm: weight ${fmt(weight.shape)} must have ${c} elements, the last dimension of x ${fmt(x.shape)}`,
    );
  }
  if (!(Number.isFinite(eps) && eps >= 0)) {
    throw new Error(`rmsNorm: eps must be a finite number ≥ 0, got ${eps}`);
  }
  const rows = x.size / c;
  const gpu = x.gpu;
  const y = empty(gpu, x.shape, { name: "rmsnorm" });
  const rstd = empty(gpu, [rows], { name: "rms_rstd" });
  const w = vectorWidth(c);
  const xin = vec4Input(x, "rmsNorm", w);
  // Two passes over the row each way, within LayerNorm's three: its plan keeps both under the loop limit.
  const plan = layerNormPlan(gpu.kernels, c, gpu.info.subgroupSize);
  const forward = plan.kind === "thread"
    ? rmsNormForwardKernel(rows, c, eps, xin.src)
    : rmsNormForwardGpuKernel(rows, c, eps, plan.threads, plan.subgroups, xin.src);
  gpu.dispatch(forward, [
    xin.binding,
    weight.binding("rmsNorm"),
    y.binding("rmsNorm"),
    rstd.binding("rmsNorm"),
  ]);
  xin.done();
  // Both gradients read x and 1/rms; only dx reads the weight.
  const out = record("rmsNorm", y, [x, weight], [x, needsGrad(x) && weight, rstd], (g) => {
    const [xi, gi] = [vec4Input(x, "rmsNorm", w), vec4Input(g, "rmsNorm", w)];
    let dx: Tensor | null = null;
    if (needsGrad(x)) {
      dx = empty(gpu, x.shape, { name: "drmsnorm" });
      const backward = plan.kind === "thread"
        ? rmsNormBackwardKernel(rows, c, xi.src, gi.src)
        : rmsNormBackwardGpuKernel(rows, c, plan.threads, plan.subgroups, xi.src, gi.src);
      gpu.dispatch(backward, [
        xi.binding,
        weight.binding("rmsNorm"),
        rstd.binding("rmsNorm"),
        gi.binding,
        dx.binding("rmsNorm"),
      ]);
    }
    let dweight: Tensor | null = null;
    if (needsGrad(weight)) {
      dweight = empty(gpu, weight.shape, { name: "dweight" });
      const partials = rmsNormWeightPartialsKernel(rows, c, xi.src, gi.src);
      const inputs = [xi.binding, rstd.binding("rmsNorm"), gi.binding];
      if (rows <= COLUMN_CHUNK) {
        gpu.dispatch(partials, [...inputs, dweight.binding("rmsNorm")]);
      } else {
        const chunks = Math.ceil(rows / COLUMN_CHUNK);
        const pw = withCategory("workspace", () => empty(gpu, [chunks, c], { name: "rms_dweight_partials" }));
        gpu.dispatch(partials, [...inputs, pw.binding("rmsNorm")]);
        finishColumns(pw, chunks, c, dweight, "rmsNorm");
        pw.dispose();
      }
    }
    xi.done();
    gi.done();
    return [dx, dweight];
  });
  // rstd lives on only through the tape (or not at all without grad).
  rstd.dispose();
  return out;
}
