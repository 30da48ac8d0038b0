/** Evaluation: mean next-token cross-entropy over batches, without gradients, dropout off. */
import type { Batch } from "./data/batches.ts";
import { evalMode, noGrad } from "./autograd.ts";
import type { LanguageModel } from "./nn/model.ts";
import { tidy } from "./tensor.ts";

/** What {@link evaluate} returns. */
export interface EvalResult {
  /** Mean cross-entropy (nats) over every counted target. */
  loss: number;
  /** Targets counted. */
  tokens: number;
  /** exp(loss). */
  perplexity: number;
}

/**
 * Mean loss over all counted targets of `batches` (each batch's mean weighted by its count), in
 * evaluation mode (dropout off, no random draws). One submit per batch; `onBatch` reports progress.
 */
export async function evaluate(
  model: LanguageModel,
  batches: readonly Batch[],
  onBatch?: (done: number, total: number) => void,
): Promise<EvalResult> {
  if (batches.length === 0) throw new Error("evaluate: no batches (the data is shorter than one window)");
  const pending: { value: Promise<Float32Array | Uint32Array>; weight: number }[] = [];
  for (let i = 0; i < batches.length; i++) {
    const b = batches[i];
    const weight = b.mask.reduce((s, m) => s + m, 0);
    const loss = noGrad(() => evalMode(() => tidy(() => model.loss(b))));
    pending.push({ value: loss.read(), weight });
    loss.dispose();
    await model.gpu.submit();
    // Keep one batch in flight: wait for the previous one while this one runs.
    if (i > 0) await pending[i - 1].value;
    onBatch?.(i + 1, batches.length);
  }
  let sum = 0, tokens = 0;
  for (const p of pending) {
    const v = (await p.value)[0];
    if (p.weight > 0) {
      sum += v * p.weight;
      tokens += p.weight;
    }
  }
  const loss = tokens > 0 ? sum / tokens : NaN;
  return { loss, tokens, perplexity: Math.exp(loss) };
}
