/**
 * Softmax cross-entropy with a per-token mask: mean over counted tokens of −log softmax(logits)[target].
 * Masked tokens (mask 0) contribute nothing; an all-zero mask gives loss 0 and zero gradients.
 */
import { vectorWidth } from "../../kernels/kernel.ts";
import {
  xentBackwardKernel,
  xentChunksKernel,
  xentCombineKernel,
  xentLossInput,
  xentLossOutput,
  xentRowsKernel,
} from "../../kernels/softmax_xent.ts";
import { xentRowsGpuKernel } from "../../kernels/xent_rows.ts";
import { xentRowsPlan } from "../../kernels/select.ts";
import { record } from "../autograd.ts";
import { empty, type Tensor, withCategory } from "../tensor.ts";
import { expectF32, expectRowTargets, expectSameGpu, fmt } from "./checks.ts";
import { type Vec4Input, vec4Input } from "./pack.ts";
import { sumInto } from "./reduce.ts";

/** The per-row tensors of cross-entropy's forward (one entry per row each). */
export interface XentRowTensors {
  /** Target ids (u32). */
  targets: Tensor;
  /** Row weights (f32; 0 ignores the row). */
  mask: Tensor;
  /** Written: log Σ exp of the row. */
  lse: Tensor;
  /** Written: mask·(lse − logit of the target). */
  rowLoss: Tensor;
}

/**
 * Records cross-entropy's per-row pass over `rows` rows of `v` logits read through `x` into
 * `t.lse` and `t.rowLoss`, in the kernels kernels/select.ts picks.
 */
export function xentRows(
  x: Pick<Vec4Input, "binding" | "src">,
  rows: number,
  v: number,
  t: XentRowTensors,
  op: string,
): void {
  const gpu = t.lse.gpu;
  const rest = [t.targets, t.mask, t.lse, t.rowLoss].map((r) => r.binding(op));
  const plan = xentRowsPlan(gpu.kernels, v, gpu.info.subgroupSize);
  if (plan.kind === "thread") {
    gpu.dispatch(xentRowsKernel(rows, v, x.src), [x.binding, ...rest]);
  } else if (plan.kind === "workgroup") {
    gpu.dispatch(xentRowsGpuKernel(rows, v, plan.threads, plan.subgroups, x.src), [x.binding, ...rest]);
  } else {
    const part = withCategory(
      "workspace",
      () => empty(gpu, [rows * plan.chunks, 2], { name: "xent_partials" }),
    );
    gpu.dispatch(xentChunksKernel(rows, v, plan.span, x.src), [x.binding, part.binding(op)]);
    gpu.dispatch(xentCombineKernel(rows, v, plan.chunks, x.src), [x.binding, part.binding(op), ...rest]);
    part.dispose();
  }
}

/** Records loss[0] = Σ rowLoss / Σ mask and scale[0] = 1/Σ mask (both 0 when nothing counts). */
export function xentFinish(rowLoss: Tensor, mask: Tensor, loss: Tensor, scale: Tensor, op: string): void {
  sumInto(
    rowLoss.gpu,
    xentLossInput(rowLoss.size),
    [rowLoss.binding(op), mask.binding(op)],
    xentLossOutput(),
    [loss.binding(op), scale.binding(op)],
    op,
  );
}

/**
 * Cross-entropy of `logits` [..., V] against `targets` (u32, one per row) weighted by `mask` (f32,
 * one per row; 1 counts, 0 ignores). Returns the mask-weighted mean as a one-element tensor.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, mask: Tensor): Tensor {
  expectF32("crossEntropy", logits);
  expectSameGpu("crossEntropy", logits, targets, mask);
  const v = logits.shape[logits.shape.length - 1];
  const rows = logits.size / v;
  expectRowTargets("crossEntropy", `logits ${fmt(logits.shape)} have`, rows, targets, mask);
  const gpu = logits.gpu;
  const lse = empty(gpu, [rows], { name: "xent_lse" });
  const rowLoss = empty(gpu, [rows], { name: "xent_rowloss" });
  const loss = empty(gpu, [1], { name: "xent_loss" });
  const scale = empty(gpu, [1], { name: "xent_scale" });
  const xin = vec4Input(logits, "crossEntropy", vectorWidth(v));
  xentRows(xin, rows, v, { targets, mask, lse, rowLoss }, "crossEntropy");
  xin.done();
  xentFinish(rowLoss, mask, loss, scale, "crossEntropy");
  rowLoss.dispose();
  const out = record("crossEntropy", loss, [logits], [logits, targets, mask, lse, scale], (g) => {
    const dx = empty(gpu, logits.shape, { name: "dlogits" });
    const li = vec4Input(logits, "crossEntropy", vectorWidth(v));
    gpu.dispatch(xentBackwardKernel(rows, v, false, li.src), [
      li.binding,
      targets.binding("crossEntropy"),
      mask.binding("crossEntropy"),
      lse.binding("crossEntropy"),
      scale.binding("crossEntropy"),
      g.binding("crossEntropy"),
      dx.binding("crossEntropy"),
    ]);
    li.done();
    return [dx];
  });
  lse.dispose();
  scale.dispose();
  return out;
}
