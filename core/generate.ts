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
