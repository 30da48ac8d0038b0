import { rejects } from "node:assert/strict";
import { evalCommand } from "../../experiments/eval.ts";

const tiny = new URL("../fixtures/gpt2_tiny/bare", import.meta.url).pathname;
const data = new URL("../data/fixtures/", import.meta.url).pathname;

Deno.test({
  name: "eval says what is wrong: text for a vocabulary with no tokenizer, a block size beyond n_positions",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await rejects(
      evalCommand({ model: tiny, data: `${data}tiny.txt`, blockSize: 8, batchSize: 2, quiet: true }),
      /no tokenizer for vocab_size 61: .* give token ids as a .bin file instead/,
    );
    await rejects(
      evalCommand({ model: tiny, data: `${data}ids.bin`, blockSize: 64, batchSize: 2, quiet: true }),
      /--block-size 64 exceeds the model's n_positions 16/,
    );
  },
});
