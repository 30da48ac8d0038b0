/**
 * Greedy decoding in batches against a one-sequence-at-a-time reference that reads every logit, and
 * the teacher-forced exact-match scorer against greedy decoding itself.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { evalExampleBatches } from "../core/data/batches.ts";
import { evaluate } from "../core/evaluate.ts";
import { noGrad } from "../core/autograd.ts";
import { greedyComplete, scoreCompletions } from "../core/generate.ts";
import { GPT } from "../core/nn/gpt.ts";
import { tidy } from "../core/tensor.ts";
import { gpuTest } from "./helpers.ts";

const CONFIG = { vocabSize: 32, blockSize: 16, nLayer: 2, nHead: 2, nEmbd: 16 };

/** Argmax of the last position's logits, each sequence run alone (batch of 1), token by token. */
async function reference(model: GPT, prompt: number[], maxNew: number, stop?: number): Promise<number[]> {
  const seq = [...prompt];
  const out: number[] = [];
  for (let n = 0; n < maxNew; n++) {
    const ids = new Uint32Array(CONFIG.blockSize);
    ids.set(seq);
    const input = { ids, batchSize: 1, blockSize: CONFIG.blockSize };
    const logits = noGrad(() => tidy(() => model.logits(input)));
    const all = await logits.download();
    logits.dispose();
    const row = all.subarray((seq.length - 1) * CONFIG.vocabSize, seq.length * CONFIG.vocabSize);
    const best = row.indexOf(Math.max(...row));
    seq.push(best);
    out.push(best);
    if (best === stop) break;
  }
  return out;
}

gpuTest("greedyComplete in batches matches one-at-a-time decoding, stop id included", async (gpu) => {
  const model = new GPT(gpu, CONFIG, { seed: 3 });
  // Three prompts of different lengths in batches of 2: padding, a partial batch, open and done rows.
  const prompts = [[1, 2, 3], [7], [4, 9, 12, 30, 5]];
  const maxNew = 5;
  const expected = [];
  for (const p of prompts) expected.push(await reference(model, p, maxNew));
  const o = { maxNew, batchSize: 2, blockSize: CONFIG.blockSize };
  deepEqual(await greedyComplete(model, prompts, o), expected);
  const stop = expected[1][1];
  const stopped = [];
  for (const p of prompts) stopped.push(await reference(model, p, maxNew, stop));
  ok(stopped.some((s) => s.length < maxNew), "the stop id ends at least one sequence early");
  deepEqual(await greedyComplete(model, prompts, { ...o, stop }), stopped);
  await rejects(
    greedyComplete(model, [[1, 2]], { ...o, maxNew: 15 }),
    /a prompt of 2 tokens \+ 15 new exceeds 16/,
  );
  model.dispose();
});

gpuTest("scoreCompletions matches exactly when greedy decoding reproduces the response", async (gpu) => {
  const model = new GPT(gpu, CONFIG, { seed: 5 });
  const prompts = [[1, 2, 3], [7], [4, 9, 12, 30, 5], [11, 3], [8, 8, 8, 8, 8, 8, 8, 8, 8, 8]];
  const decoded: number[][] = [];
  for (const p of prompts) decoded.push(await reference(model, p, 5));
  // Each prompt with its own greedy output (a match, lengths 1..5), and with that output changed at
  // its first, middle or last id (no match there, though greedy agrees up to the change).
  const items: { prompt: number[]; response: number[] }[] = [];
  const expected: boolean[] = [];
  prompts.forEach((p, i) => {
    const full = decoded[i].slice(0, 1 + (i % 5));
    items.push({ prompt: p, response: full });
    expected.push(true);
    for (const at of new Set([0, full.length >> 1, full.length - 1])) {
      const wrong = [...full];
      wrong[at] = (wrong[at] + 1) % CONFIG.vocabSize;
      items.push({ prompt: p, response: wrong });
      expected.push(false);
    }
  });
  // Batches of 3 rows: items of one prompt split across batches, a partial last batch.
  const scores = await scoreCompletions(model, items, { batchSize: 3, blockSize: CONFIG.blockSize });
  deepEqual(scores.map((s) => s.match), expected);
  await rejects(
    scoreCompletions(model, [{ prompt: [1, 2], response: new Array(16).fill(1) }], {
      batchSize: 3,
      blockSize: CONFIG.blockSize,
    }),
    /item 0 needs 17 positions; blockSize is 16/,
  );
  model.dispose();
});

gpuTest(
  "scoreCompletions' loss is evaluate's masked cross-entropy over response and after ids",
  async (gpu) => {
    const model = new GPT(gpu, CONFIG, { seed: 9 });
    const items = [
      { prompt: [1, 2, 3], response: [4, 5], after: [31] },
      { prompt: [7], response: [9, 9, 2, 0] },
      { prompt: [4, 9, 12, 30, 5, 6, 7], response: [3], after: [31] },
    ];
    const scores = await scoreCompletions(model, items, { batchSize: 2, blockSize: 12 });
    deepEqual(scores.map((s) => s.tokens), [3, 4, 2]);
    const examples = items.map((it) => {
      const ids = [...it.prompt, ...it.response, ...(it.after ?? [])];
      const mask = ids.map((_, i) => (i >= it.prompt.length ? 1 : 0));
      return { ids: Uint32Array.from(ids), mask: Uint8Array.from(mask) };
    });
    const ref = await evaluate(model, evalExampleBatches(examples, 12, 2));
    const sum = scores.reduce((s, x) => s + x.nll, 0);
    const count = scores.reduce((s, x) => s + x.tokens, 0);
    equal(count, ref.tokens);
    ok(Math.abs(sum / count - ref.loss) < 1e-5 * ref.loss, `${sum / count} vs evaluate's ${ref.loss}`);
    await rejects(
      scoreCompletions(model, [{ prompt: [1], response: [40] }], { batchSize: 2, blockSize: 12 }),
      /item 0 has id 40, outside the vocabulary of 32/,
    );
    model.dispose();
  },
);
