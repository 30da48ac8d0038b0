/** Greedy decoding in batches against a one-sequence-at-a-time reference that reads every logit. */
import { deepEqual, ok, rejects } from "node:assert/strict";
import { noGrad } from "../core/autograd.ts";
import { greedyComplete } from "../core/generate.ts";
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
