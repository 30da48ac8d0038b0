import assert from "node:assert/strict";
import { brownToText, loadBrown, loadBrownTokens } from "../../core/data/corpora.ts";
import { bytesTokenizer } from "../../core/data/tokenizer.ts";

let brown: Promise<string[]> | null = null;
const loadOnce = () => brown ??= loadBrown();

Deno.test("brown is 500 documents in file order, ca01 first and cr09 last", async () => {
  const docs = await loadOnce();
  assert.equal(docs.length, 500);
  assert.equal(
    docs[0].split("\n")[0],
    `The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election ` +
      `produced "no evidence" that any irregularities took place.`,
  );
  assert.ok(docs[499].startsWith("Dear Sirs: Let me begin by clearing up any possible misconception"));
  assert.equal(docs[0].split("\n").length, 67, "ca01's paragraphs");
});

Deno.test("brown has no tags, no `` '' marks and no space before punctuation", async () => {
  const all = (await loadOnce()).join("\n");
  assert.ok(all.length > 5_900_000 && all.length < 6_000_000, `${all.length} characters`);
  assert.doesNotMatch(all, /[a-z]\/(at|nn|nns|np|vb|vbd|vbn|vbz|in|jj|cc|cs|rb|pps|ppss|dt|nil)(-tl|-hl)?\b/);
  assert.doesNotMatch(all, /``|''/);
  assert.doesNotMatch(all, / [,.;?!)\]](?=\s|$)/);
  assert.doesNotMatch(all, /[(\[] /);
  assert.doesNotMatch(all, /\?\?|;;|!!|\.\./);
  assert.match(all, /the jury said, "considering the widespread interest in the election,/);
});

Deno.test("brownToText restores quotes, brackets and doubled marks", () => {
  const file = [
    "",
    "",
    "\t``/`` Is/bez it/pps ( he/pps asked/vbd ) 1/4''/nn wide/jj ?/. ?/. ''/'' ./.",
    "He/pps said/vbd ,/, '/' go/vb '/' ;/. ;/.",
    "",
    "",
    "\tMr./np Jr./np ./.",
    "",
  ].join("\n");
  assert.equal(brownToText(file), `"Is it (he asked) 1/4" wide?". He said, 'go';\nMr. Jr.`);
});

Deno.test("brown tokens with bytes are the documents' UTF-8 joined by blank lines", async () => {
  const docs = await loadOnce();
  const tokens = await loadBrownTokens(bytesTokenizer);
  const bytes = docs.reduce((n, d) => n + new TextEncoder().encode(d).length, 0);
  assert.equal(tokens.length, bytes + 2 * (docs.length - 1));
  assert.equal(bytesTokenizer.decode(tokens.subarray(0, 40)), "The Fulton County Grand Jury said Friday");
  const end = new TextEncoder().encode(docs[0]).length;
  assert.deepEqual([...tokens.subarray(end, end + 2)], [10, 10]);
});
