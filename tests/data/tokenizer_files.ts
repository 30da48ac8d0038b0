/**
 * Small tokenizer.json files built by hand (GPT-2-style byte-level BPE, LLaMA-2-style BPE with byte
 * fallback), for the tokenizer tests and for model folders the CLI tests make.
 */
/** GPT-2's byte → printable character table (bytes_to_unicode), in GPT-2's id order for ids 0–255. */
function byteLevelAlphabet(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  return cs.map((c) => String.fromCodePoint(c));
}

/**
 * A byte-level BPE shaped like GPT-2's tokenizer.json: the 256 byte characters (ids 0–255, GPT-2's own
 * order, so "Ġ" = space = 220), GPT-2's first seven merges (ids 256–262, as in GPT-2), and
 * <|endoftext|> as id 263.
 */
export function gpt2Json(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  byteLevelAlphabet().forEach((c, i) => (vocab[c] = i));
  const merges = ["Ġ t", "Ġ a", "h e", "i n", "r e", "o n", "Ġt he"];
  merges.forEach((m, i) => (vocab[m.replace(" ", "")] = 256 + i));
  vocab["<|endoftext|>"] = 263;
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [{
      id: 263,
      content: "<|endoftext|>",
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: true,
      special: true,
    }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
}

export const LLAMA_MERGES = [
  "l l",
  "e ll",
  "H ell",
  "Hell o",
  "▁ Hello",
  "▁ t",
  "h e",
  "▁t he",
  "o r",
  "▁ w",
];

/**
 * A BPE with byte fallback shaped like LLaMA-2's tokenizer.json: <unk> <s> </s> (0–2), the byte
 * tokens <0x00>…<0xFF> (3–258), ten characters (259–268: ▁ H e l o w r d t h) and LLAMA_MERGES'
 * results (269–278, in merge order). Spaces become "▁" by the normalizer (Prepend + Replace), the
 * decoder undoes it (Replace, ByteFallback, Fuse, Strip one leading space), as LLaMA-2's file does.
 */
export function llamaJson(): Record<string, unknown> {
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
  [..."▁Helowrdth"].forEach((c, i) => (vocab[c] = 259 + i));
  LLAMA_MERGES.forEach((m, i) => (vocab[m.replace(" ", "")] = 269 + i));
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: "▁" },
        { type: "Replace", pattern: { String: " " }, content: "▁" },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: "<s>", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<s>", type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      vocab,
      merges: LLAMA_MERGES,
    },
  };
}
