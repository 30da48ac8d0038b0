/**
 * Tokenizers from a Hugging Face `tokenizer.json` (LLaMA, Mistral, GPT-2 and other BPE models), run
 * by the maintained npm library `@huggingface/tokenizers`. This file takes the file's contents, not a
 * path: reading it is the caller's job (core/ runs in a browser). The library trusts its input, so the
 * fields it reads are checked here first and anything it still throws is wrapped with the file's name.
 */
import { Tokenizer as HFTokenizer } from "@huggingface/tokenizers";
import { describe, label, oneLine } from "../io/safetensors.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** Raised for an unusable tokenizer.json; one line naming the file and what is wrong with it. */
export class TokenizerJsonError extends Error {}

/**
 * End-of-sequence token names, in order of preference. tokenizer.json does not say which token ends a
 * sequence (tokenizer_config.json does), so the first of these among the file's special added tokens
 * is taken: `</s>` (LLaMA 1–2, Mistral), `<|endoftext|>` (GPT-2), `<|end_of_text|>` (LLaMA 3), `<eos>` (Gemma).
 */
export const EOS_TOKENS: readonly string[] = ["</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"];

/** Ids at or beyond this are refused: no model's vocabulary is near 2^24, and ids index embedding rows. */
const MAX_VOCAB = 2 ** 24;

/** Text that every loaded tokenizer must encode and decode without throwing (checked at load). */
const PROBE = "Hello, world! ünï — 🙂\n\t0123 <s></s>";

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * A `Tokenizer` from the contents of a tokenizer.json (text or UTF-8 bytes); `where` names the file in
 * errors. Only `BPE` models are read. `vocabSize` is the largest id in `model.vocab` or `added_tokens`
 * plus one; `eot` is the id of the first of {@link EOS_TOKENS} among the special added tokens, else null.
 * `encode` adds no special tokens (no `<s>`), as `gpt2Tokenizer` adds none, but special-token text in the
 * input (e.g. "</s>") becomes its id: the library always splits on added tokens. `decode` keeps special
 * tokens and does not clean up spaces, so decode(encode(s)) gives back s when the vocabulary covers it.
 * Throws {@link TokenizerJsonError} for a file it cannot use.
 */
export function tokenizerFromJson(contents: string | Uint8Array, where = "tokenizer.json"): Tokenizer {
  const fail = (why: string): never => {
    throw new TokenizerJsonError(`${where}: ${oneLine(why)}`);
  };
  let text = contents;
  if (typeof text !== "string") {
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(text);
    } catch {
      fail("not UTF-8 text");
    }
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text as string);
  } catch (e) {
    fail(`not valid JSON (${(e as Error).message})`);
  }
  const { json, vocabSize, eot } = checkJson(raw, fail);
  let built: { encode: (s: string) => number[]; decode: (ids: ArrayLike<number>) => string };
  try {
    built = build(json, vocabSize, fail);
  } catch (e) {
    if (e instanceof TokenizerJsonError) throw e;
    // The library's messages name no field ("x is not a function"): find the part that breaks it.
    const part = PARTS.find((k) => {
      if (json[k] === null) return false;
      try {
        build({ ...json, [k]: null }, vocabSize, fail);
        return true;
      } catch {
        return false;
      }
    });
    return fail(`${part ?? "the tokenizer"} cannot be used (${(e as Error).message})`);
  }
  const { encode, decode } = built;
  return { name: "tokenizer.json", vocabSize, eot, encode, decode };
}

/** The pipeline parts around the model, each null or an object with a `type`. */
const PARTS = ["normalizer", "pre_tokenizer", "post_processor", "decoder"] as const;

/**
 * The library's tokenizer for checked `json`, wrapped as encode and decode, run once on sample text.
 * Errors the library throws while building or on the sample pass through; errors on later calls are
 * wrapped with the file's name by `fail`.
 */
function build(
  json: Record<string, unknown>,
  vocabSize: number,
  fail: (why: string) => never,
): { encode: (s: string) => number[]; decode: (ids: ArrayLike<number>) => string } {
  const lib = new HFTokenizer(json, {});
  let probing = true;
  const guard = <T>(what: string, f: () => T): T => {
    if (probing) return f();
    try {
      return f();
    } catch (e) {
      return fail(`${what} failed (${(e as Error).message})`);
    }
  };
  const encode = (s: string): number[] => {
    const ids = guard("encoding text", () => lib.encode(s, { add_special_tokens: false }).ids);
    // The library maps a token missing from the vocabulary to unk_token's id, undefined when there is none.
    const bad = ids.findIndex((id) => !Number.isInteger(id));
    if (bad >= 0) {
      fail(`encoding text gave no id for token ${bad}; the file's vocabulary or merges are broken`);
    }
    return ids;
  };
  const decode = (ids: ArrayLike<number>): string => {
    const list = Array.from(ids);
    for (const id of list) {
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize || lib.id_to_token(id) === undefined) {
        fail(`id ${describe(id)} has no token (ids of this vocabulary are 0…${vocabSize - 1})`);
      }
    }
    // The library refuses an empty list; the text of no ids is empty.
    if (list.length === 0) return "";
    return guard(
      "decoding ids",
      () => lib.decode(list, { skip_special_tokens: false, clean_up_tokenization_spaces: false }),
    );
  };
  decode(encode(PROBE));
  probing = false;
  return { encode, decode };
}

/** The fields the library reads, checked; returns the JSON with absent optional parts as null. */
function checkJson(
  raw: unknown,
  fail: (why: string) => never,
): { json: Record<string, unknown>; vocabSize: number; eot: number | null } {
  if (!isObject(raw)) fail("not a JSON object");
  const root = raw as Record<string, unknown>;
  const model = root.model;
  if (!isObject(model)) fail(`model is ${describe(model)}, expected an object`);
  const m = model as Record<string, unknown>;
  if (m.type !== "BPE") {
    fail(`model.type is ${describe(m.type)}; only "BPE" models (LLaMA, Mistral, GPT-2) are read`);
  }
  const checkId = (id: unknown, what: string): number => {
    if (!Number.isInteger(id) || (id as number) < 0) {
      fail(`${what} has id ${describe(id)}, expected a non-negative integer`);
    }
    if ((id as number) >= MAX_VOCAB) fail(`${what} has id ${id}, beyond 2^24 (no vocabulary is that large)`);
    return id as number;
  };
  if (!isObject(m.vocab)) fail(`model.vocab is ${describe(m.vocab)}, expected an object of token → id`);
  const tokenOf = new Map<number, string>();
  for (const [token, id] of Object.entries(m.vocab as Record<string, unknown>)) {
    const i = checkId(id, `model.vocab token ${label(token)}`);
    const other = tokenOf.get(i);
    if (other !== undefined) fail(`model.vocab tokens ${label(other)} and ${label(token)} both have id ${i}`);
    tokenOf.set(i, token);
  }
  if (tokenOf.size === 0) fail("model.vocab is empty");
  const vocab = m.vocab as Record<string, number>;
  const has = (t: string) => Object.hasOwn(vocab, t);
  if (!Array.isArray(m.merges)) fail(`model.merges is ${describe(m.merges)}, expected an array`);
  const merges = m.merges as unknown[];
  // The library reads every merge in the format of the first: "a b" strings or ["a", "b"] pairs.
  const pairs = merges.length > 0 && Array.isArray(merges[0]);
  merges.forEach((x, i) => {
    const ok = pairs
      ? Array.isArray(x) && x.length === 2 && x.every((s) => typeof s === "string")
      : typeof x === "string" && x.includes(" ");
    if (!ok) {
      fail(
        `model.merges[${i}] is ${describe(x)}, expected ${pairs ? 'a ["a", "b"] pair' : 'an "a b" string'}`,
      );
    }
  });
  if (m.unk_token !== undefined && m.unk_token !== null) {
    if (typeof m.unk_token !== "string") {
      fail(`model.unk_token is ${describe(m.unk_token)}, expected a string`);
    }
    if (!has(m.unk_token as string)) {
      fail(`model.unk_token ${label(m.unk_token as string)} is not in model.vocab`);
    }
  }
  for (const k of ["byte_fallback", "fuse_unk", "ignore_merges"]) {
    if (m[k] !== undefined && m[k] !== null && typeof m[k] !== "boolean") {
      fail(`model.${k} is ${describe(m[k])}, expected true or false`);
    }
  }
  for (const k of ["end_of_word_suffix", "continuing_subword_suffix", "continuing_subword_prefix"]) {
    if (m[k] !== undefined && m[k] !== null && typeof m[k] !== "string") {
      fail(`model.${k} is ${describe(m[k])}, expected a string or null`);
    }
  }
  const added = root.added_tokens ?? [];
  if (!Array.isArray(added)) fail(`added_tokens is ${describe(added)}, expected an array`);
  let eot: number | null = null;
  let eotRank = EOS_TOKENS.length;
  (added as unknown[]).forEach((t, i) => {
    const what = `added_tokens[${i}]`;
    if (!isObject(t)) fail(`${what} is ${describe(t)}, expected an object`);
    const a = t as Record<string, unknown>;
    if (typeof a.content !== "string" || a.content === "") {
      fail(`${what}.content is ${describe(a.content)}, expected a non-empty string`);
    }
    const content = a.content as string;
    const id = checkId(a.id, `${what} (${label(content)})`);
    const holder = tokenOf.get(id);
    if (holder !== undefined && holder !== content) {
      fail(`${what} ${label(content)} has id ${id}, which model.vocab gives to ${label(holder)}`);
    }
    if (has(content) && vocab[content] !== id) {
      fail(`${what} ${label(content)} has id ${id}, but model.vocab gives it id ${vocab[content]}`);
    }
    for (const k of ["special", "normalized", "lstrip", "rstrip", "single_word"]) {
      if (a[k] !== undefined && typeof a[k] !== "boolean") {
        fail(`${what}.${k} is ${describe(a[k])}, expected true or false`);
      }
    }
    tokenOf.set(id, content);
    const rank = EOS_TOKENS.indexOf(content);
    if (a.special === true && rank >= 0 && rank < eotRank) [eot, eotRank] = [id, rank];
  });
  for (const k of PARTS) {
    const part = root[k];
    if (part !== undefined && part !== null && !(isObject(part) && typeof part.type === "string")) {
      fail(`${k} is ${describe(part)}, expected null or an object with a "type"`);
    }
  }
  let vocabSize = 0;
  for (const id of tokenOf.keys()) vocabSize = Math.max(vocabSize, id + 1);
  const json = {
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: null,
    ...root,
    added_tokens: added,
  };
  return { json, vocabSize, eot };
}
