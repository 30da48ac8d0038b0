/**
 * Greedy decoding with fixed shapes: sequences are right-padded to the block size (causal attention
 * makes the padding invisible to earlier positions), so every step reuses the training kernels
 * instead of compiling new ones per length. Decoding runs in evaluation mode: dropout is off.
 */
import { evalMode, noGrad } from "./autograd.ts";
import type { GPT } from "./nn/gpt.ts";
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
  model: GPT,
  prompts: readonly ArrayLike<number>[],
  o: GreedyOptions,
): Promise<number[][]> {
  const { batchSize: b, blockSize: t } = o;
  const v = model.config.vocabSize;
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
      const logits = noGrad(() =>
        evalMode(() => tidy(() => model.logits({ ids, batchSize: b, blockSize: t })))
      );
      // Read back only each open sequence's last row of logits, all in one round trip.
      const flat = logits.view([b * t, v]);
      const open = seqs.map((_, r) => r).filter((r) => !done[r]);
      const last = open.map((r) => flat.rows(r * t + seqs[r].length - 1, r * t + seqs[r].length));
      const reads = Promise.all(last.map((row) => row.read()));
      reads.catch(() => {}); // a failed submit rejects both: report it once, from submit
      await model.gpu.submit();
      const values = await reads;
      for (const x of [...last, flat, logits]) x.dispose();
      open.forEach((r, k) => {
        const row = values[k];
        let best = 0;
        for (let j = 1; j < v; j++) if (row[j] > row[best]) best = j;
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
  model: GPT,
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
    const logits = noGrad(() =>
      evalMode(() => tidy(() => model.logits({ ids, batchSize: b, blockSize: t })))
    );
    // The rows that predict the targets: from the prompt's last position on, one per target id.
    const flat = logits.view([b * t, v]);
    const spans = batch.map((it, r) => {
      const first = r * t + it.prompt.length - 1;
      return flat.rows(first, first + targetsOf(it).length);
    });
    const reads = Promise.all(spans.map((s) => s.read()));
    reads.catch(() => {}); // a failed submit rejects both: report it once, from submit
    await model.gpu.submit();
    const values = await reads;
    for (const x of [...spans, flat, logits]) x.dispose();
    batch.forEach((it, r) => {
      const rows = values[r];
      const targets = targetsOf(it);
      let match = true, nll = 0;
      targets.forEach((id, k) => {
        const row = rows.subarray(k * v, (k + 1) * v);
        let best = 0;
        for (let j = 1; j < v; j++) if (row[j] > row[best]) best = j;
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
