/**
 * Greedy decoding with fixed shapes: sequences are right-padded to the block size (causal attention
 * makes the padding invisible to earlier positions), so every step reuses the training kernels
 * instead of compiling new ones per length. Decoding runs in evaluation mode: dropout is off.
 */
import { evalMode, noGrad } from "./autograd.ts";
import type { LanguageModel } from "./nn/model.ts";
import { tidy } from "./tensor.ts";

/** Options of {@link greedyComplete}. */
export interface GreedyOptions {
  /** Most tokens to add to each prompt. */
  maxNew: number;
  /** Stop a sequence once it produced this id (it is kept in the output). */
  stop?: number;
  /** Sequences per forward pass. */
  batchSize: number;
  /** Positions per row (≤ the model's n_positions); prompts plus completion must fit. */
  blockSize: number;
}

/** The greedy completion (generated ids only) of each prompt. */
export async function greedyComplete(
  model: LanguageModel,
  prompts: readonly ArrayLike<number>[],
  o: GreedyOptions,
): Promise<number[][]> {
  const { batchSize: b, blockSize: t } = o;
  const out: number[][] = prompts.map(() => []);
  for (let start = 0; start < prompts.length; start += b) {
    const idx = prompts.map((_, i) => i).slice(start, start + b);
    const seqs = idx.map((i) => Array.from(prompts[i]));
    for (const s of seqs) {
      if (s.length === 0) throw new Error("greedyComplete: empty prompt");
      if (s.length + o.maxNew > t) {
        throw new Error(
          `greedyComplete: a prompt of ${s.length} tokens + ${o.maxNew} new exceeds ${t} positions`,
        );
      }
    }
    const done = seqs.map(() => false);
    for (let n = 0; n < o.maxNew && done.some((d) => !d); n++) {
      const ids = new Uint32Array(b * t);
      seqs.forEach((s, r) => ids.set(s, r * t));
      // Read back only each open sequence's last row of logits.
      const open = seqs.map((_, r) => r).filter((r) => !done[r]);
      const values = await logitRows(model, ids, b, t, open.map((r) => r * t + seqs[r].length - 1), () => 1);
      open.forEach((r, k) => {
        const best = argmax(values[k]);
        seqs[r].push(best);
        out[idx[r]].push(best);
        if (best === o.stop) done[r] = true;
      });
    }
  }
  return out;
}

/** A prompt, the exact ids its greedy completion must produce, and ids after them that count in the loss only. */
export interface ExpectedCompletion {
  /** Ids decoding starts from. */
  prompt: ArrayLike<number>;
  /** Ids greedy decoding must produce, in order, for a match. */
  response: ArrayLike<number>;
  /** Ids that follow the response (an end-of-text id): in the loss, not in the match. */
  after?: ArrayLike<number>;
}

/** What {@link scoreCompletions} measured for one item. */
export interface CompletionScore {
  /** Greedy decoding from the prompt produces exactly the response ids. */
  match: boolean;
  /** Σ −log p(id) over response and `after` ids, each given everything before it (nats). */
  nll: number;
  /** Ids counted in `nll`. */
  tokens: number;
}

/**
 * Exact match and loss of each item's response, with one forward pass per batch instead of one per
 * new token: greedy decoding follows the response for as long as every argmax equals the next
 * response id, so under teacher forcing (prompt ++ response as input) "every response position's
 * argmax is the response id" is the same event. Ties go to the lower id, as in
 * {@link greedyComplete}. The loss is the masked cross-entropy `evaluate` computes, summed here in
 * float64 from the float32 logits. Rows are right-padded to `blockSize` (causal attention keeps the
 * padding invisible); prompt + response + after − 1 ids must fit. Runs in evaluation mode.
 */
export async function scoreCompletions(
  model: LanguageModel,
  items: readonly ExpectedCompletion[],
  o: { batchSize: number; blockSize: number },
): Promise<CompletionScore[]> {
  const { batchSize: b, blockSize: t } = o;
  const v = model.config.vocabSize;
  const targetsOf = (it: ExpectedCompletion) => [...Array.from(it.response), ...Array.from(it.after ?? [])];
  items.forEach((it, i) => {
    if (it.prompt.length === 0 || it.response.length === 0) {
      throw new Error(`scoreCompletions: item ${i} has an empty prompt or response`);
    }
    const need = it.prompt.length + targetsOf(it).length - 1;
    if (need > t) throw new Error(`scoreCompletions: item ${i} needs ${need} positions; blockSize is ${t}`);
    for (const id of [...Array.from(it.prompt), ...targetsOf(it)]) {
      if (!Number.isInteger(id) || id < 0 || id >= v) {
        throw new Error(`scoreCompletions: item ${i} has id ${id}, outside the vocabulary of ${v}`);
      }
    }
  });
  const out: CompletionScore[] = [];
  for (let start = 0; start < items.length; start += b) {
    const batch = items.slice(start, start + b);
    const ids = new Uint32Array(b * t);
    batch.forEach((it, r) => {
      ids.set(Array.from(it.prompt), r * t);
      ids.set(targetsOf(it).slice(0, -1), r * t + it.prompt.length);
    });
    // The rows that predict the targets: from the prompt's last position on, one per target id.
    const values = await logitRows(
      model,
      ids,
      b,
      t,
      batch.map((it, r) => r * t + it.prompt.length - 1),
      (k) => targetsOf(batch[k]).length,
    );
    batch.forEach((it, r) => {
      const rows = values[r];
      const targets = targetsOf(it);
      let match = true, nll = 0;
      targets.forEach((id, k) => {
        const row = rows.subarray(k * v, (k + 1) * v);
        const best = argmax(row);
        if (k < it.response.length && best !== id) match = false;
        let sum = 0;
        for (let j = 0; j < v; j++) sum += Math.exp(row[j] - row[best]);
        nll += row[best] + Math.log(sum) - row[id];
      });
      out.push({ match, nll, tokens: targets.length });
    });
  }
  return out;
}

/**
 * The logits of `ids` ([b, t], evaluation mode, no tape) at `count(k)` consecutive rows from row
 * `first[k]` of the flattened [b·t, V] logits, for each k: one forward pass, one round trip.
 */
async function logitRows(
  model: LanguageModel,
  ids: Uint32Array,
  b: number,
  t: number,
  first: readonly number[],
  count: (k: number) => number,
): Promise<Float32Array[]> {
  const logits = noGrad(() => evalMode(() => tidy(() => model.logits({ ids, batchSize: b, blockSize: t }))));
  const flat = logits.view([b * t, model.config.vocabSize]);
  const spans = first.map((r0, k) => flat.rows(r0, r0 + count(k)));
  const reads = Promise.all(spans.map((s) => s.read()));
  reads.catch(() => {}); // a failed submit rejects both: report it once, from submit
  await model.gpu.submit();
  const values = await reads;
  for (const x of [...spans, flat, logits]) x.dispose();
  return values as Float32Array[];
}

/** The index of the largest value (the lowest index among ties), as greedy decoding picks. */
function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
  return best;
}
