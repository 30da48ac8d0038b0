/**
 * The LM head and its loss: logits = x·wteᵀ (tied to the embedding), then masked cross-entropy.
 * When the logits fit one binding they are computed and kept like any activation (as PyTorch
 * does). Beyond the device's binding limit (a 50257-word vocabulary over many tokens) the rows are
 * processed in chunks: forward keeps only the per-row log-sum-exp, backward recomputes each chunk's
 * logits, turns them into gradients in place and multiplies them out, so no binding ever exceeds
 * the limit and no [N, V] tensor exists.
 */
import { accumulateKernel } from "../../kernels/elementwise.ts";
import { xentBackwardKernel } from "../../kernels/softmax_xent.ts";
import { needsGrad, record } from "../autograd.ts";
import { empty, type Tensor, withCategory, zeros } from "../tensor.ts";
import { expectF32, expectRowTargets, expectSameGpu, fmt } from "./checks.ts";
import { crossEntropy, xentFinish, xentRows } from "./cross_entropy.ts";
import { matmul, type MatmulOptions, matmulShape, runMatmul } from "./matmul.ts";

/** Options of {@link lmHeadLoss}. */
export interface LmHeadOptions {
  /** Rows per chunk (default: as many as keep one chunk's logits within the binding limit). */
  chunkRows?: number;
}

/** Rows per chunk so that rows × vocab floats fit `limitBytes`, rounded to a multiple of 64 rows. */
export function lmHeadChunkRows(vocab: number, limitBytes: number): number {
  const rows = Math.floor(limitBytes / (vocab * 4));
  if (rows < 64) {
    throw new Error(
      `lmHeadLoss: a vocabulary of ${vocab} leaves fewer than 64 rows per ${limitBytes}-byte binding`,
    );
  }
  return rows - (rows % 64);
}

/**
 * Mean masked cross-entropy of logits = x·wteᵀ against `targets` (u32) weighted by `mask` (f32):
 * x [..., C], wte [V, C], one target and mask entry per row of x. Returns a one-element tensor.
 */
export function lmHeadLoss(
  x: Tensor,
  wte: Tensor,
  targets: Tensor,
  mask: Tensor,
  options: LmHeadOptions = {},
): Tensor {
  expectF32("lmHeadLoss", x);
  expectF32("lmHeadLoss", wte);
  expectSameGpu("lmHeadLoss", x, wte, targets, mask);
  const c = x.shape[x.shape.length - 1];
  if (wte.shape.length !== 2 || wte.shape[1] !== c) {
    throw new Error(`lmHeadLoss: wte ${fmt(wte.shape)} must be [V, ${c}] for x ${fmt(x.shape)}`);
  }
  const v = wte.shape[0];
  const rows = x.size / c;
  expectRowTargets("lmHeadLoss", `x ${fmt(x.shape)} has`, rows, targets, mask);
  const limit = x.gpu.info.limits.maxStorageBufferBindingSize;
  const chunk = options.chunkRows ?? (rows * v * 4 <= limit ? rows : lmHeadChunkRows(v, limit));
  if (chunk >= rows) {
    const logits = matmul(x, wte, { transB: true });
    const loss = crossEntropy(logits, targets, mask);
    logits.dispose();
    return loss;
  }
  return chunkedLoss(x, wte, targets, mask, rows, c, v, chunk);
}

function chunkedLoss(
  x: Tensor,
  wte: Tensor,
  targets: Tensor,
  mask: Tensor,
  rows: number,
  c: number,
  v: number,
  chunk: number,
): Tensor {
  const gpu = x.gpu;
  const flat = x.view([rows, c]);
  const lse = empty(gpu, [rows], { name: "lm_lse" });
  const rowLoss = empty(gpu, [rows], { name: "lm_rowloss" });
  const loss = empty(gpu, [1], { name: "lm_loss" });
  const scale = empty(gpu, [1], { name: "lm_scale" });
  const spans: [number, number][] = [];
  for (let r0 = 0; r0 < rows; r0 += chunk) spans.push([r0, Math.min(rows, r0 + chunk)]);
  /** op(a)·op(b) as a new tensor, or into `out`; not recorded on the tape. */
  const mm = (a: Tensor, b: Tensor, o: MatmulOptions, out?: Tensor) => {
    const { s, shape } = matmulShape(a, b, o);
    return runMatmul(a, b, s, shape, undefined, out);
  };
  for (const [r0, r1] of spans) {
    const xs = flat.rows(r0, r1);
    const rowViews = {
      targets: targets.rows(r0, r1),
      mask: mask.rows(r0, r1),
      lse: lse.rows(r0, r1),
      rowLoss: rowLoss.rows(r0, r1),
    };
    const logits = withCategory("workspace", () => mm(xs, wte, { transB: true }));
    xentRows({ binding: logits.binding("lmHeadLoss"), src: "storage" }, r1 - r0, v, rowViews, "lmHeadLoss");
    logits.dispose();
    for (const t of [xs, ...Object.values(rowViews)]) t.dispose();
  }
  xentFinish(rowLoss, mask, loss, scale, "lmHeadLoss");
  rowLoss.dispose();
  const out = record("lmHeadLoss", loss, [x, wte], [flat, wte, targets, mask, lse, scale], (g) => {
    const dx = needsGrad(x) ? empty(gpu, x.shape, { name: "dlm_x" }) : null;
    const dwte = needsGrad(wte) ? zeros(gpu, wte.shape, { name: "dlm_wte" }) : null;
    const dxFlat = dx && dx.view([rows, c]);
    for (const [r0, r1] of spans) {
      const n = r1 - r0;
      const views = [targets.rows(r0, r1), mask.rows(r0, r1), lse.rows(r0, r1)];
      const xs = flat.rows(r0, r1);
      const dlogits = withCategory("workspace", () => mm(xs, wte, { transB: true }));
      gpu.dispatch(
        xentBackwardKernel(n, v, true),
        [dlogits, ...views, scale, g].map((t) => t.binding("lmHeadLoss")),
      );
      if (dxFlat) {
        const dxs = dxFlat.rows(r0, r1);
        mm(dlogits, wte, {}, dxs);
        dxs.dispose();
      }
      if (dwte) {
        const part = withCategory("workspace", () => mm(dlogits, xs, { transA: true }));
        gpu.dispatch(
          accumulateKernel(dwte.size),
          [part.binding("lmHeadLoss"), dwte.binding("lmHeadLoss")],
        );
        part.dispose();
      }
      dlogits.dispose();
      xs.dispose();
      for (const t of views) t.dispose();
    }
    dxFlat?.dispose();
    return [dx, dwte];
  });
  flat.dispose();
  lse.dispose();
  scale.dispose();
  return out;
}
