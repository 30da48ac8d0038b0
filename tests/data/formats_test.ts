import assert from "node:assert/strict";
import {
  type Dataset,
  encodeExample,
  loadDataset,
  needsTokenizer,
  parseDataset,
} from "../../core/data/formats.ts";
import { bytesTokenizer, gpt2Tokenizer } from "../../core/data/tokenizer.ts";

const utf8 = (s: string) => new TextEncoder().encode(s);
const u16 = (ids: number[]) => new Uint8Array(Uint16Array.from(ids).buffer);
const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url).pathname;

function stream(d: Dataset): number[] {
  assert.equal(d.kind, "stream");
  return [...(d as { tokens: Uint32Array }).tokens];
}

Deno.test("a .txt file is one document", () => {
  const d = parseDataset("a.txt", utf8("hi\n\nyo"), bytesTokenizer, 256);
  assert.deepEqual(stream(d), [104, 105, 10, 10, 121, 111]);
});

Deno.test("jsonl text lines are documents joined by the end-of-text id", () => {
  const bytes = utf8('{"text": "Hello"}\n\n{"text": " world", "source": "x"}\r\n');
  assert.deepEqual(stream(parseDataset("d.jsonl", bytes, gpt2Tokenizer, 50304)), [15496, 50256, 995]);
  assert.deepEqual(stream(parseDataset("d.jsonl", bytes, bytesTokenizer, 256)), [
    ...utf8("Hello"),
    10,
    10,
    ...utf8(" world"),
  ]);
});

Deno.test("jsonl prompt/response lines are examples with loss on the response and end-of-text", () => {
  const bytes = utf8('{"prompt": "Hello", "response": " world"}\n{"prompt": "", "response": "ab"}');
  const d = parseDataset("p.jsonl", bytes, gpt2Tokenizer, 50257);
  assert.equal(d.kind, "examples");
  if (d.kind !== "examples") return;
  assert.equal(d.examples.length, 2);
  assert.deepEqual([...d.examples[0].ids], [15496, 995, 50256]);
  assert.deepEqual([...d.examples[0].mask], [0, 1, 1]);
  const bytesEx = encodeExample("Q", "ab", bytesTokenizer);
  assert.deepEqual([...bytesEx.ids], [81, 97, 98]);
  assert.deepEqual([...bytesEx.mask], [0, 1, 1]);
});

Deno.test("a .bin file is little-endian uint16 ids and needs no tokenizer", () => {
  assert.deepEqual(stream(parseDataset("t.bin", u16([0, 1, 258, 50256]), null, 50257)), [0, 1, 258, 50256]);
  assert.deepEqual(stream(parseDataset("t.bin", new Uint8Array([2, 1, 255, 0]), null, 300)), [258, 255]);
});

Deno.test("needsTokenizer follows the format's extension, in any case", () => {
  assert.equal(needsTokenizer("a.txt"), true);
  assert.equal(needsTokenizer("dir.v2/a.JSONL"), true);
  assert.equal(needsTokenizer("a.bin"), false);
  assert.equal(needsTokenizer("A.BIN"), false);
  assert.throws(() => needsTokenizer("a.csv"), /a\.csv: unknown data format '\.csv'/);
});

Deno.test("loadDataset reads .txt, .jsonl and .bin files", async () => {
  assert.deepEqual(stream(await loadDataset(fixture("tiny.txt"), bytesTokenizer, 256)), [
    ...utf8("Hi there.\n"),
  ]);
  assert.deepEqual(stream(await loadDataset(fixture("ids.bin"), null, 50257)), [1, 258, 50256, 7]);
  const pairs = await loadDataset(fixture("pairs.jsonl"), bytesTokenizer, 256);
  assert.equal(pairs.kind, "examples");
  if (pairs.kind !== "examples") return;
  assert.deepEqual([...pairs.examples[1].ids], [...utf8("Q: hi hello")]);
  assert.deepEqual([...pairs.examples[1].mask], [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
});

Deno.test("data errors name the file and line", async () => {
  const bad = (name: string, text: string | Uint8Array, re: RegExp, tok = bytesTokenizer, vocab = 256) =>
    assert.throws(() => parseDataset(name, typeof text === "string" ? utf8(text) : text, tok, vocab), re);
  bad("x.jsonl", '{"text": "a"}\n{"text": "b"\n', /^Error: x\.jsonl line 2: bad JSON/);
  bad(
    "x.jsonl",
    '{"text": "a"}\n\n{"prompt": "b"}\n',
    /x\.jsonl line 3: needs a string "text" field, or string "prompt"/,
  );
  bad("x.jsonl", '{"text": 5}', /x\.jsonl line 1: needs a string "text"/);
  bad("x.jsonl", '["a"]', /x\.jsonl line 1: expected a JSON object, got an array/);
  bad("x.jsonl", '{"text": "a", "prompt": "b", "response": "c"}', /line 1: has both "text" and "prompt"/);
  bad(
    "x.jsonl",
    '{"text": "a"}\n{"prompt": "b", "response": "c"}',
    /x\.jsonl line 2: a prompt\/response line, but line 1 is a text line/,
  );
  bad("x.jsonl", '{"prompt": "b", "response": ""}', /x\.jsonl line 1: "response" is empty/);
  const stopOnly = parseDataset("y.jsonl", utf8('{"prompt": "b", "response": ""}'), gpt2Tokenizer, 50257);
  assert.deepEqual(
    stopOnly.kind === "examples" && [...stopOnly.examples[0].mask],
    [0, 1],
    "eot alone is a target",
  );
  bad("x.jsonl", "\n\n", /x\.jsonl: no JSON lines/);
  bad("x.bin", new Uint8Array([1, 0, 2]), /x\.bin: 3 bytes is not a whole number of uint16 token ids/);
  bad(
    "x.bin",
    u16([5, 300, 7]),
    /x\.bin: token 1 \(byte offset 2\) is id 300, not below the model's vocabulary size 256/,
  );
  bad("x.csv", "a,b", /x\.csv: unknown data format '\.csv'; use \.txt/);
  bad("README", "a", /README: unknown data format \(no extension\)/);
  bad("x.txt", "", /x\.txt: the file is empty/);
  bad("x.txt", new Uint8Array([0xff, 0xfe, 0x41]), /x\.txt: not valid UTF-8/);
  bad(
    "x.txt",
    "hello",
    /x\.txt: the gpt2 tokenizer's ids go up to 50256, beyond the model's vocabulary size 256/,
    gpt2Tokenizer,
  );
  assert.throws(() => parseDataset("x.txt", utf8("hi"), null, 1000), /x\.txt: text data needs a tokenizer/);
  assert.throws(
    () => parseDataset("x.jsonl", utf8('{"text":"a"}'), null, 1000),
    /x\.jsonl: text data needs a tokenizer/,
  );
  await assert.rejects(
    loadDataset(fixture("missing.txt"), bytesTokenizer, 256),
    /missing\.txt: cannot read data file/,
  );
  await assert.rejects(
    loadDataset(fixture("tiny.csv"), bytesTokenizer, 256),
    /tiny\.csv: unknown data format/,
  );
});
