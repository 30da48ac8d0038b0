/**
 * Tokenizers: bytes (vocabulary 256, UTF-8) and GPT-2's BPE (r50k_base from npm `gpt-tokenizer`,
 * ids identical to GPT-2's). Documents are joined with the end-of-text id as an id (50256 for
 * GPT-2), never by encoding the string "<|endoftext|>".
 */
import { decode as bpeDecode, encode as bpeEncode } from "gpt-tokenizer/r50k_base";

/** Text ↔ token ids. */
export interface Tokenizer {
  /** `bytes`, `gpt2`, or `tokenizer.json` for one read from a model directory's Hugging Face file. */
  readonly name: "bytes" | "gpt2" | "tokenizer.json";
  /** Number of ids. */
  readonly vocabSize: number;
  /** Id placed between documents, or null when the vocabulary has none (bytes: "\n\n" instead). */
  readonly eot: number | null;
  /** Ids of `text`. */
  encode(text: string): number[];
  /** Text of `ids` (invalid UTF-8 replaced). */
  decode(ids: ArrayLike<number>): string;
}

/** UTF-8 bytes as ids 0–255. */
export const bytesTokenizer: Tokenizer = {
  name: "bytes",
  vocabSize: 256,
  eot: null,
  encode: (text) => Array.from(new TextEncoder().encode(text)),
  decode: (ids) => new TextDecoder().decode(Uint8Array.from(ids as ArrayLike<number>)),
};

/** GPT-2's byte-level BPE (50257 ids; 50256 is <|endoftext|>). */
export const gpt2Tokenizer: Tokenizer = {
  name: "gpt2",
  vocabSize: 50257,
  eot: 50256,
  // Special-token text in documents is encoded as ordinary text, as GPT-2's data pipelines do.
  encode: (text) => bpeEncode(text, { disallowedSpecial: new Set() }),
  decode: (ids) => bpeDecode(Array.from(ids as ArrayLike<number>)),
};

/** The tokenizer for a model's vocabulary size: bytes for 256, GPT-2 BPE for 50257 (or padded to 50304). */
export function tokenizerFor(vocabSize: number): Tokenizer {
  if (vocabSize === 256) return bytesTokenizer;
  if (vocabSize === 50257 || vocabSize === 50304) return gpt2Tokenizer;
  throw new Error(
    `no tokenizer for vocab_size ${vocabSize}: text needs vocab 256 (bytes), 50257 (GPT-2 BPE) or a tokenizer.json in the model's folder; give token ids as a .bin file instead`,
  );
}

/** Ids of several documents joined by the tokenizer's end-of-text id (bytes: by "\n\n"). */
export function encodeDocuments(tokenizer: Tokenizer, docs: readonly string[]): Uint32Array {
  const out: number[] = [];
  const sep = tokenizer.eot === null ? tokenizer.encode("\n\n") : [tokenizer.eot];
  docs.forEach((d, i) => {
    if (i > 0) out.push(...sep);
    for (const id of tokenizer.encode(d)) out.push(id);
  });
  return Uint32Array.from(out);
}
