/**
 * The LM head and its loss: logits = x·wteᵀ (tied to the embedding), then masked cross-entropy.
 * When the logits fit one binding they are computed and kept like any activation (as PyTorch
 * does). Beyond the device's binding limit (a 50257-word vocabulary over many tokens) the rows are
 * processed in chunks: forward keeps only the per-row log-sum-exp, backward recomputes each chunk's
 * logits, turns them into gradients in place and multiplies them out, so no binding ever exceeds
 * the limit and no [N, V] tensor exists.
 */
import { accumulateKernel } from "../../kernels/elementwise.ts";
import { xentBackwardKernel, xentFinishKernel, xentRowsKernel } from "../../kernels/softmax_xent.ts";
import { needsGrad, record } from "../autograd.ts";
import { empty, type Tensor, withCategory, zeros } from "../tensor.ts";
import { expectF32, expectSameGpu, fmt } from "./checks.ts";
import { crossEntropy } from "./cross_entropy.ts";
import { matmul, runMatmul } from "./matmul.ts";

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
  if (targets.dtype !== "u32") throw new Error(`lmHeadLoss: targets ${targets} must be u32 token ids`);
  if (targets.size !== rows || mask.size !== rows) {
    throw new Error(
      `lmHeadLoss: x ${fmt(x.shape)} has ${rows} rows but targets ${fmt(targets.shape)} and mask ${
        fmt(mask.shape)
      } must have one entry per row`,
    );
  }
  const gpu = x.gpu;
  const flat = x.view([rows, c]);
  const lse = empty(gpu, [rows], { name: "lm_lse" });
  const rowLoss = empty(gpu, [rows], { name: "lm_rowloss" });
  const loss = empty(gpu, [1], { name: "lm_loss" });
  const scale = empty(gpu, [1], { name: "lm_scale" });
  const spans: [number, number][] = [];
  for (let r0 = 0; r0 < rows; r0 += chunk) spans.push([r0, Math.min(rows, r0 + chunk)]);
  /** logits of rows [r0, r1) as a new [r1 − r0, V] tensor. */
  const logitsOf = (r0: number, r1: number, xs: Tensor) =>
    runMatmul(xs, wte, {
      m: r1 - r0,
      n: v,
      k: c,
      batch: 1,
      transA: false,
      transB: true,
      strideA: 0,
      strideB: 0,
    }, [
      r1 - r0,
      v,
    ]);
  for (const [r0, r1] of spans) {
    const views = [
      flat.rows(r0, r1),
      targets.rows(r0, r1),
      mask.rows(r0, r1),
      lse.rows(r0, r1),
      rowLoss.rows(r0, r1),
    ];
    const logits = withCategory("workspace", () => logitsOf(r0, r1, views[0]));
    gpu.dispatch(
      xentRowsKernel(r1 - r0, v),
      [logits, ...views.slice(1)].map((t) => t.binding("lmHeadLoss")),
    );
    logits.dispose();
    for (const t of views) t.dispose();
  }
  gpu.dispatch(xentFinishKernel(rows), [rowLoss, mask, loss, scale].map((t) => t.binding("lmHeadLoss")));
  rowLoss.dispose();
  const out = record("lmHeadLoss", loss, [x, wte], [flat, wte, targets, mask, lse, scale], (g) => {
    const dx = needsGrad(x) ? empty(gpu, x.shape, { name: "dlm_x" }) : null;
    const dwte = needsGrad(wte) ? zeros(gpu, wte.shape, { name: "dlm_wte" }) : null;
    const dxFlat = dx && dx.view([rows, c]);
    for (const [r0, r1] of spans) {
      const n = r1 - r0;
      const views = [targets.rows(r0, r1), mask.rows(r0, r1), lse.rows(r0, r1)];
      const xs = flat.rows(r0, r1);
      const dlogits = withCategory("workspace", () => logitsOf(r0, r1, xs));
      gpu.dispatch(
        xentBackwardKernel(n, v, true),
        [dlogits, ...views, scale, g].map((t) => t.binding("lmHeadLoss")),
      );
      if (dxFlat) {
        const dxs = dxFlat.rows(r0, r1);
        runMatmul(
          dlogits,
          wte,
          { m: n, n: c, k: v, batch: 1, transA: false, transB: false, strideA: 0, strideB: 0 },
          [n, c],
          undefined,
          dxs,
        );
        dxs.dispose();
      }
      if (dwte) {
        const part = withCategory(
          "workspace",
          () =>
            runMatmul(dlogits, xs, {
              m: v,
              n: c,
              k: n,
              batch: 1,
              transA: true,
              transB: false,
              strideA: 0,
              strideB: 0,
            }, [v, c]),
        );
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
