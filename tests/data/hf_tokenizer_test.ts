import assert from "node:assert/strict";
import { EOS_TOKENS, tokenizerFromJson, TokenizerJsonError } from "../../core/data/hf_tokenizer.ts";
import { gpt2Tokenizer, type Tokenizer } from "../../core/data/tokenizer.ts";
import { readTokenizer } from "../../core/io/hf.ts";
import { Draw, FuzzTally, type Mutant, mutateBytes, mutateJsonText } from "../fuzz.ts";
import { gpt2Json, llamaJson } from "./tokenizer_files.ts";

const load = (json: unknown) => tokenizerFromJson(JSON.stringify(json));

const ROUND_TRIP = [
  "Hello world",
  "the theory of the heat",
  " leading and trailing spaces  ",
  "line one\nline two\r\n\ttabbed",
  "ünïcödé — naïve café, 東京",
  "emoji 🙂👍🏽 and 🇫🇷 flags",
  "",
];

function roundTrips(tok: Tokenizer) {
  for (const s of ROUND_TRIP) assert.equal(tok.decode(tok.encode(s)), s, JSON.stringify(s));
}

Deno.test("byte-level BPE tokenizer.json encodes to the ids its merges give", () => {
  const tok = load(gpt2Json());
  assert.equal(tok.name, "tokenizer.json");
  // " the": Ġ t h e → (Ġ,t) rank 0 → Ġt h e → (h,e) rank 2 → Ġt he → (Ġt,he) rank 6 → Ġthe = 262.
  assert.deepEqual(tok.encode(" the"), [262]);
  // Same merges, same ids as GPT-2 itself for " the".
  assert.deepEqual(tok.encode(" the"), gpt2Tokenizer.encode(" the"));
  // "the in" splits as "the" | " in": t,he → [83, 258]; Ġ,in → [220, 259] (t = byte 116 → id 83).
  assert.deepEqual(tok.encode("the in"), [83, 258, 220, 259]);
  // No merge touches "Hello": H e l l o are bytes 72 101 108 108 111 → ids 39 68 75 75 78.
  assert.deepEqual(tok.encode("Hello"), [39, 68, 75, 75, 78]);
  // "é" is bytes C3 A9: C3 sits in GPT-2's third printable range (174–255) → 106 + 21 = 127; A9 in
  // the second (161–172) → 94 + 8 = 102.
  assert.deepEqual(tok.encode("é"), [127, 102]);
  roundTrips(tok);
});

Deno.test("byte-fallback BPE tokenizer.json (LLaMA-2 style) encodes to the ids its merges give", () => {
  const tok = load(llamaJson());
  // "▁Hello▁world": (l,l) 0 → (e,ll) 1 → (H,ell) 2 → (Hell,o) 3 → (▁,Hello) 4; then (o,r) 8 and (▁,w) 9:
  // ▁Hello ▁w or l d = 273 278 277 262 266. No <s>: encode adds no special tokens.
  assert.deepEqual(tok.encode("Hello world"), [273, 278, 277, 262, 266]);
  // "▁the": (▁,t) 5, (h,e) 6, (▁t,he) 7 → ▁the = 276.
  assert.deepEqual(tok.encode("the"), [276]);
  // "é" is not in the vocabulary: its bytes C3 A9 become <0xC3> <0xA9> = 3 + 195, 3 + 169.
  assert.deepEqual(tok.encode("é"), [259, 198, 172]);
  // 🙂 is F0 9F 99 82; "\n" is <0x0A> = 13.
  assert.deepEqual(tok.encode("🙂\n"), [259, 243, 162, 156, 133, 13]);
  // Special-token text becomes its id (the library always splits on added tokens).
  assert.deepEqual(tok.encode("the</s>"), [276, 2]);
  assert.equal(tok.decode([273, 2]), "Hello</s>");
  roundTrips(tok);
});

Deno.test("eot is the end-of-sequence special token when the file declares one, else null", () => {
  assert.equal(load(gpt2Json()).eot, 263);
  assert.equal(load(llamaJson()).eot, 2);
  assert.deepEqual(EOS_TOKENS.slice(0, 2), ["</s>", "<|endoftext|>"]);
  const notSpecial = gpt2Json();
  (notSpecial.added_tokens as { special: boolean }[])[0].special = false;
  assert.equal(load(notSpecial).eot, null);
  const noEos = llamaJson();
  noEos.added_tokens = (noEos.added_tokens as { content: string }[]).filter((t) => t.content !== "</s>");
  assert.equal(load(noEos).eot, null);
});

Deno.test("vocabSize is the largest id in the vocabulary or the added tokens, plus one", () => {
  assert.equal(load(gpt2Json()).vocabSize, 264);
  assert.equal(load(llamaJson()).vocabSize, 279);
  // An added token beyond model.vocab (a padded vocabulary) counts.
  const padded = llamaJson();
  (padded.added_tokens as unknown[]).push({ id: 300, content: "<pad>", special: true });
  const tok = load(padded);
  assert.equal(tok.vocabSize, 301);
  assert.equal(tok.decode([300]), "<pad>");
  assert.throws(() => tok.decode([290]), /tokenizer\.json: id 290 has no token/);
  assert.throws(() => tok.decode([301]), /tokenizer\.json: id 301 has no token/);
});

Deno.test("bytes and text give the same tokenizer; broken files are named with what is wrong", () => {
  const text = JSON.stringify(llamaJson());
  assert.deepEqual(tokenizerFromJson(new TextEncoder().encode(text)).encode("Hello"), [273]);
  const bad = (json: unknown, re: RegExp) => {
    const s = typeof json === "string" ? json : JSON.stringify(json);
    assert.throws(() => tokenizerFromJson(s, "m/tokenizer.json"), (e: Error) => {
      assert.equal(e.constructor, TokenizerJsonError);
      assert.match(e.message, re);
      return true;
    });
  };
  bad("{", /^m\/tokenizer\.json: not valid JSON \(/);
  bad([], /^m\/tokenizer\.json: not a JSON object$/);
  bad({ ...llamaJson(), model: { ...llamaJson().model as object, type: "Unigram" } }, /only "BPE" models/);
  const dupe = llamaJson();
  (dupe.model as { vocab: Record<string, number> }).vocab["<s>"] = 0;
  bad(dupe, /model\.vocab tokens <unk> and <s> both have id 0/);
  const clash = gpt2Json();
  (clash.added_tokens as { id: number }[])[0].id = 7;
  bad(clash, /added_tokens\[0\] <\|endoftext\|> has id 7, which model\.vocab gives to \($/);
  bad(
    { ...gpt2Json(), decoder: { type: "Nope" } },
    /m\/tokenizer\.json: decoder cannot be used \(Unknown Decoder type: Nope\)/,
  );
});

Deno.test("readTokenizer reads <dir>/tokenizer.json, and gives null when there is none", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lisa-tok-" });
  try {
    assert.equal(await readTokenizer(dir), null);
    await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(llamaJson()));
    const tok = await readTokenizer(dir);
    assert.deepEqual(tok?.encode("Hello world"), [273, 278, 277, 262, 266]);
    await Deno.writeTextFile(`${dir}/tokenizer.json`, "{}");
    await assert.rejects(() => readTokenizer(dir), new RegExp(`^Error: ${dir}/tokenizer\\.json: model is`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * One seeded mutation of a tokenizer.json: its bytes (one time in five), or its JSON. Half the JSON
 * mutations leave model.vocab alone, since its hundreds of entries would otherwise draw nearly every
 * mutation away from the normalizer, pre-tokenizer, post-processor and decoder the library builds.
 */
function mutateTokenizerJson(d: Draw, json: Record<string, unknown>): Mutant<string | Uint8Array> {
  if (d.chance(0.2)) return mutateBytes(d, new TextEncoder().encode(JSON.stringify(json)));
  if (d.chance(0.5)) return mutateJsonText(d, json);
  const model = json.model as Record<string, unknown>;
  const skeleton = { ...json, model: { ...model, vocab: "@vocab@" } };
  const m = mutateJsonText(d, skeleton);
  return { value: m.value.replace('"@vocab@"', JSON.stringify(model.vocab)), what: `${m.what} (vocab kept)` };
}

Deno.test("fuzz: mutated tokenizer.json files load and run, or fail with one line naming the file", async () => {
  const sources = [gpt2Json(), llamaJson()];
  const tally = new FuzzTally("tokenizer.json");
  const samples = ["Hello world", "the heat in ünï 🙂", " a\n"];
  for (let seed = 1; seed <= 400; seed++) {
    const d = new Draw(seed);
    const m = mutateTokenizerJson(d, d.pick(sources));
    await tally.run(
      `seed ${seed} (${m.what})`,
      "tokenizer.json",
      () => tokenizerFromJson(m.value),
      [TokenizerJsonError],
      (tok) => {
        for (const s of samples) {
          try {
            const ids = tok.encode(s);
            assert.equal(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize), true);
            tok.decode(ids);
          } catch (e) {
            // A loaded tokenizer may still refuse some text, but only with a clean error naming the file.
            const clean = e instanceof TokenizerJsonError && e.message.startsWith("tokenizer.json: ") &&
              !e.message.includes("\n");
            if (!clean) throw e;
          }
        }
      },
    );
  }
  console.log(tally.summary());
  assert.equal(tally.crashes.length, 0, tally.crashes.join("\n"));
  assert.equal(tally.loaded > 0 && tally.rejected > 0, true, tally.summary());
});
