import assert from "node:assert/strict";
import { type Dataset, loadDataset } from "../../core/data/formats.ts";
import { bytesTokenizer, gpt2Tokenizer, type Tokenizer } from "../../core/data/tokenizer.ts";
import { Draw, FuzzTally, type Mutant, mutateBytes, mutateJsonText } from "../fuzz.ts";

const utf8 = (s: string) => new TextEncoder().encode(s);

const TEXT_LINES = [
  { text: "Hello there." },
  { text: "Ünïcode — and a tab\tinside", source: "web" },
  { text: "" },
  { text: "line\nbreak in a string" },
];
const PAIR_LINES = [
  { prompt: "Q: 2+2?", response: " 4" },
  { prompt: "", response: "ok" },
  { prompt: "Translate: chat", response: " cat", id: 3 },
];

/** One seeded mutation of a JSONL file: a line's JSON, its lines, or its bytes. */
function mutateJsonl(d: Draw, lines: object[]): Mutant<Uint8Array> {
  const text = lines.map((l) => JSON.stringify(l));
  const kind = d.int(10);
  if (kind < 4) {
    const n = d.int(text.length);
    const m = mutateJsonText(d, lines[n]);
    text[n] = m.value;
    return { value: utf8(text.join("\n") + "\n"), what: `line ${n + 1}: ${m.what}` };
  }
  if (kind < 7) {
    const n = d.int(text.length + 1);
    const op = d.pick(["blank", "spaces", "cr", "other kind", "array", "drop", "join"] as const);
    if (op === "blank") text.splice(n, 0, "");
    if (op === "spaces") text.splice(n, 0, " \t ");
    if (op === "cr") text[Math.min(n, text.length - 1)] += "\r";
    if (op === "other kind") {
      text.splice(n, 0, JSON.stringify(lines === TEXT_LINES ? PAIR_LINES[0] : TEXT_LINES[0]));
    }
    if (op === "array") text.splice(n, 0, "[1, 2]");
    if (op === "drop") text.splice(Math.min(n, text.length - 1), 1);
    if (op === "join" && n < text.length - 1) text.splice(n, 2, text[n] + text[n + 1]);
    return { value: utf8(text.join("\n")), what: `${op} at line ${n + 1}` };
  }
  return mutateBytes(d, utf8(text.join("\n") + "\n"));
}

/** A loaded data set is well formed: ids below the vocabulary, masks as long as ids, ≥ 2 ids each. */
function wellFormed(vocabSize: number): (d: Dataset) => void {
  const ids = (xs: Uint32Array, what: string) => {
    assert.equal(xs.length >= 2, true, `${what} has ${xs.length} ids`);
    const bad = xs.findIndex((x) => x >= vocabSize);
    assert.equal(bad, -1, `${what}: id ${xs[bad]} at ${bad} is not below ${vocabSize}`);
  };
  return (d) => {
    if (d.kind === "stream") return ids(d.tokens, "the stream");
    assert.equal(d.examples.length > 0, true, "no examples");
    d.examples.forEach((e, i) => {
      ids(e.ids, `example ${i}`);
      assert.equal(e.mask.length, e.ids.length, `example ${i} mask length`);
      assert.equal(e.mask.includes(1), true, `example ${i} has no target`);
    });
  };
}

Deno.test("fuzz: mutated .jsonl, .txt and .bin files load or fail with one line naming the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lisa-fuzz-" });
  try {
    const tokenizers: [Tokenizer, number][] = [[bytesTokenizer, 256], [gpt2Tokenizer, 50257]];
    const text = utf8("Hi there.\nA second line — ünïcode, and digits 0123.\n");
    const ids = new Uint8Array(Uint16Array.from([0, 1, 7, 59, 60, 12, 33, 2]).buffer);
    const kinds: [
      string,
      number,
      (d: Draw) => Mutant<Uint8Array>,
      (d: Draw) => [Tokenizer | null, number],
    ][] = [
      ["data.jsonl", 160, (d) => mutateJsonl(d, d.pick([TEXT_LINES, PAIR_LINES])), (d) => d.pick(tokenizers)],
      ["data.txt", 60, (d) => mutateBytes(d, text), (d) => d.pick(tokenizers)],
      // The tiny GPT-2's 61 ids: flipped bytes soon name an id beyond the vocabulary.
      ["ids.bin", 60, (d) => mutateBytes(d, ids), () => [null, 61]],
    ];
    for (const [name, count, mutate, tokenizer] of kinds) {
      const tally = new FuzzTally(name.slice(name.indexOf(".")));
      const path = `${dir}/${name}`;
      for (let seed = 1; seed <= count; seed++) {
        const d = new Draw(seed);
        const m = mutate(d);
        const [tok, vocab] = tokenizer(d);
        await Deno.writeFile(path, m.value);
        await tally.run(
          `seed ${seed} ${tok?.name ?? "ids"} (${m.what})`,
          name,
          () => loadDataset(path, tok, vocab),
          [Error],
          wellFormed(vocab),
        );
      }
      console.log(tally.summary());
      assert.equal(tally.crashes.length, 0, tally.crashes.join("\n"));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hand-written data edge cases: blank JSONL lines are skipped, too little data is named", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lisa-fuzz-" });
  try {
    const load = async (name: string, bytes: string | Uint8Array, tok: Tokenizer | null = bytesTokenizer) => {
      await Deno.writeFile(`${dir}/${name}`, typeof bytes === "string" ? utf8(bytes) : bytes);
      return loadDataset(`${dir}/${name}`, tok, tok?.vocabSize ?? 61);
    };
    const bad = async (name: string, bytes: string | Uint8Array, re: RegExp, tok?: Tokenizer | null) => {
      const error = await load(name, bytes, tok).then(() => null, (e: Error) => e);
      if (!error) throw new Error(`${name} loaded, expected ${re}`);
      assert.equal(error.constructor, Error, error.stack);
      assert.equal(error.message.includes("\n"), false, error.message);
      assert.equal(error.message.startsWith(`${dir}/${name}`), true, error.message);
      assert.match(error.message, re);
    };
    const blank = await load("blank.jsonl", '\n{"text": "ab"}\n \t \r\n\n{"text": "cd"}\n\n');
    assert.deepEqual(blank.kind === "stream" && [...blank.tokens], [...utf8("ab\n\ncd")]);
    await bad("empty.txt", "", /empty\.txt: the file is empty/);
    await bad("one.txt", "a", /one\.txt: 1 token\(s\); a stream needs at least 2/);
    await bad(
      "odd.bin",
      new Uint8Array([1, 0, 2]),
      /odd\.bin: 3 bytes is not a whole number of uint16 token ids/,
      null,
    );
    await bad("one.bin", new Uint8Array([1, 0]), /one\.bin: 1 token\(s\); a stream needs at least 2/, null);
    await bad(
      "big.bin",
      new Uint8Array([1, 0, 61, 0]),
      /big\.bin: token 1 \(byte offset 2\) is id 61, not below/,
      null,
    );
    await bad("nul.jsonl", '{"text": "a"}\n\u0000\n', /nul\.jsonl line 2: bad JSON \(/);
    await bad("cr.jsonl", '{"text": "a\rb" oops}', /cr\.jsonl line 1: bad JSON \(/);
    await bad(
      "lone.jsonl",
      '{"prompt": "", "response": "a"}',
      /lone\.jsonl line 1: prompt and response make 1 token/,
    );
    await bad("blank.jsonl", "\n \n\r\n", /blank\.jsonl: no JSON lines/);
    await bad(
      "empty-texts.jsonl",
      '{"text": ""}\n{"text": ""}',
      /empty-texts\.jsonl: 1 token\(s\)/,
      gpt2Tokenizer,
    );
    await bad("num.jsonl", "7", /num\.jsonl line 1: expected a JSON object, got number/);
    await bad(
      "missing.jsonl",
      '{"prompt": "x"}',
      /missing\.jsonl line 1: needs a string "text" field, or string "prompt"/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
