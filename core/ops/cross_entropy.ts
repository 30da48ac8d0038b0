/**
 * Softmax cross-entropy with a per-token mask: mean over counted tokens of −log softmax(logits)[target].
 * Masked tokens (mask 0) contribute nothing; an all-zero mask gives loss 0 and zero gradients.
 */
import { vectorWidth } from "../../kernels/kernel.ts";
import { xentBackwardKernel, xentFinishKernel, xentRowsKernel } from "../../kernels/softmax_xent.ts";
import { record } from "../autograd.ts";
import { empty, type Tensor } from "../tensor.ts";
import { expectF32, expectRowTargets, expectSameGpu, fmt } from "./checks.ts";
import { vec4Input } from "./pack.ts";

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
  gpu.dispatch(xentRowsKernel(rows, v, xin.src), [
    xin.binding,
    targets.binding("crossEntropy"),
    mask.binding("crossEntropy"),
    lse.binding("crossEntropy"),
    rowLoss.binding("crossEntropy"),
  ]);
  xin.done();
  gpu.dispatch(xentFinishKernel(rows), [
    rowLoss.binding("crossEntropy"),
    mask.binding("crossEntropy"),
    loss.binding("crossEntropy"),
    scale.binding("crossEntropy"),
  ]);
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
