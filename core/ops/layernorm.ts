/** LayerNorm over the last dimension: forward and backward (dx, dγ, dβ). */
import { vectorWidth } from "../../kernels/kernel.ts";
import {
  layerNormBackwardKernel,
  layerNormForwardKernel,
  layerNormParamPartialsKernel,
} from "../../kernels/layernorm.ts";
import { layerNormBackwardGpuKernel, layerNormForwardGpuKernel } from "../../kernels/layernorm_rows.ts";
import { COLUMN_CHUNK } from "../../kernels/reduce.ts";
import { layerNormPlan } from "../../kernels/select.ts";
import { needsGrad, record } from "../autograd.ts";
import { empty, type Tensor, withCategory } from "../tensor.ts";
import { expectF32, expectSameGpu, fmt } from "./checks.ts";
import { vec4Input } from "./pack.ts";
import { finishColumns } from "./reduce.ts";

/** (x − μ)/√(σ² + eps) · gamma + beta over x's last dimension; gamma and beta have that size. */
export function layerNorm(x: Tensor, gamma: Tensor, beta: Tensor, eps = 1e-5): Tensor {
  for (const t of [x, gamma, beta]) expectF32("layerNorm", t);
  expectSameGpu("layerNorm", x, gamma, beta);
  const c = x.shape[x.shape.length - 1];
  if (gamma.size !== c || beta.size !== c) {
    throw new Error(
      `layerNorm: gamma ${fmt(gamma.shape)} and beta ${
        fmt(beta.shape)
      } must have ${c} elements, the last dimension of x ${fmt(x.shape)}`,
    );
  }
  const rows = x.size / c;
  const gpu = x.gpu;
  const y = empty(gpu, x.shape, { name: "layernorm" });
  const mean = empty(gpu, [rows], { name: "ln_mean" });
  const rstd = empty(gpu, [rows], { name: "ln_rstd" });
  const w = vectorWidth(c);
  const xin = vec4Input(x, "layerNorm", w);
  const plan = layerNormPlan(gpu.kernels, c, gpu.info.subgroupSize);
  const forward = plan.kind === "thread"
    ? layerNormForwardKernel(rows, c, eps, xin.src)
    : layerNormForwardGpuKernel(rows, c, eps, plan.threads, plan.subgroups, xin.src);
  gpu.dispatch(forward, [
    xin.binding,
    gamma.binding("layerNorm"),
    beta.binding("layerNorm"),
    y.binding("layerNorm"),
    mean.binding("layerNorm"),
    rstd.binding("layerNorm"),
  ]);
  xin.done();
  const needX = needsGrad(x) || needsGrad(gamma);
  const out = record("layerNorm", y, [x, gamma, beta], [
    (needX || needsGrad(beta)) && x,
    needsGrad(x) && gamma,
    mean,
    rstd,
  ], (g) => {
    let dx: Tensor | null = null;
    const [xi, gi] = [vec4Input(x, "layerNorm", w), vec4Input(g, "layerNorm", w)];
    if (needsGrad(x)) {
      dx = empty(gpu, x.shape, { name: "dlayernorm" });
      const backward = plan.kind === "thread"
        ? layerNormBackwardKernel(rows, c, xi.src, gi.src)
        : layerNormBackwardGpuKernel(rows, c, plan.threads, plan.subgroups, xi.src, gi.src);
      gpu.dispatch(backward, [
        xi.binding,
        gamma.binding("layerNorm"),
        mean.binding("layerNorm"),
        rstd.binding("layerNorm"),
        gi.binding,
        dx.binding("layerNorm"),
      ]);
    }
    let dgamma: Tensor | null = null;
    let dbeta: Tensor | null = null;
    if (needsGrad(gamma) || needsGrad(beta)) {
      const chunks = Math.ceil(rows / COLUMN_CHUNK);
      const [pg, pb] = withCategory("workspace", () => [
        empty(gpu, [chunks, c], { name: "ln_dgamma_partials" }),
        empty(gpu, [chunks, c], { name: "ln_dbeta_partials" }),
      ]);
      gpu.dispatch(layerNormParamPartialsKernel(rows, c, xi.src, gi.src), [
        xi.binding,
        mean.binding("layerNorm"),
        rstd.binding("layerNorm"),
        gi.binding,
        pg.binding("layerNorm"),
        pb.binding("layerNorm"),
      ]);
      dgamma = empty(gpu, gamma.shape, { name: "dgamma" });
      dbeta = empty(gpu, beta.shape, { name: "dbeta" });
      finishColumns(pg, chunks, c, dgamma, "layerNorm");
      finishColumns(pb, chunks, c, dbeta, "layerNorm");
      pg.dispose();
      pb.dispose();
      if (!needsGrad(gamma)) {
        dgamma.dispose();
        dgamma = null;
      }
      if (!needsGrad(beta)) {
        dbeta.dispose();
        dbeta = null;
      }
    }
    xi.done();
    gi.done();
    return [dx, dgamma, dbeta];
  });
  // mean and rstd live on only through the tape (or not at all without grad).
  mean.dispose();
  rstd.dispose();
  return out;
}
