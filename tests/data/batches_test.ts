import assert from "node:assert/strict";
import {
  type Batch,
  evalExampleBatches,
  evalWindowCount,
  evalWindows,
  ExampleBatcher,
  splitExamples,
  splitTrainVal,
  StreamBatcher,
} from "../../core/data/batches.ts";
import type { Example } from "../../core/data/formats.ts";

const range = (n: number, from = 0) => Uint32Array.from({ length: n }, (_, i) => from + i);
const plain = (b: Batch) => ({
  ids: [...b.ids],
  targets: [...b.targets],
  mask: [...b.mask],
  batchSize: b.batchSize,
  blockSize: b.blockSize,
});
const draw = (batcher: { next(): Batch }, n: number) =>
  Array.from({ length: n }, () => plain(batcher.next()));
const example = (ids: number[], mask: number[]): Example => ({
  ids: Uint32Array.from(ids),
  mask: Uint8Array.from(mask),
});

Deno.test("split puts a seeded tenth of 64 contiguous chunks into validation", () => {
  const tokens = range(6400);
  const a = splitTrainVal(tokens, 0.1, 7);
  assert.equal(a.val.length, 600, "round(0.1 * 64) = 6 chunks of 100");
  assert.equal(a.train.length, 5800);
  const starts = [...a.val].filter((t) => t % 100 === 0);
  assert.equal(starts.length, 6);
  for (const s of starts) {
    assert.deepEqual([...a.val.subarray(a.val.indexOf(s), a.val.indexOf(s) + 100)], [...range(100, s)]);
  }
  assert.deepEqual(
    [...a.train, ...a.val].sort((x, y) => x - y),
    [...tokens],
    "every token in exactly one split",
  );
  assert.deepEqual(splitTrainVal(tokens, 0.1, 7), a, "same seed, same split");
  assert.notDeepEqual(splitTrainVal(tokens, 0.1, 8).val, a.val, "another seed, another split");
});

Deno.test("split of a short stream keeps validation non-empty, and refuses what cannot split", () => {
  const s = splitTrainVal(range(5), 0.01, 1);
  assert.equal(s.val.length, 1);
  assert.equal(s.train.length, 4);
  assert.throws(() => splitTrainVal(range(1), 0.1, 1), /cannot split 1 token\(s\).*need at least 2/);
  assert.throws(() => splitTrainVal(range(100), 0, 1), /validation fraction 0 must be between 0 and 1/);
  assert.throws(() => splitTrainVal(range(100), 1, 1), /validation fraction 1 must be between 0 and 1/);
});

Deno.test("split of examples is seeded and keeps file order on each side", () => {
  const examples = Array.from({ length: 20 }, (_, i) => example([i, i], [0, 1]));
  const { train, val } = splitExamples(examples, 0.25, 3);
  assert.equal(val.length, 5);
  assert.equal(train.length, 15);
  const ids = (xs: Example[]) => xs.map((e) => e.ids[0]);
  assert.deepEqual([...ids(train), ...ids(val)].sort((x, y) => x - y), [...range(20)]);
  assert.deepEqual(ids(val), [...ids(val)].sort((x, y) => x - y));
  assert.deepEqual(ids(splitExamples(examples, 0.25, 3).val), ids(val));
  assert.notDeepEqual(ids(splitExamples(examples, 0.25, 4).val), ids(val));
  assert.throws(() => splitExamples(examples.slice(0, 1), 0.5, 1), /cannot split 1 example\(s\)/);
});

Deno.test("stream batches are windows of T+1 tokens with targets shifted by one", () => {
  const tokens = range(1000, 5000);
  const b = new StreamBatcher(tokens, 4, 8, 1).next();
  assert.equal(b.ids.length, 32);
  for (let row = 0; row < 4; row++) {
    const start = b.ids[row * 8] - 5000;
    assert.ok(start >= 0 && start + 9 <= 1000);
    assert.deepEqual([...b.ids.subarray(row * 8, row * 8 + 8)], [...range(8, 5000 + start)]);
    assert.deepEqual([...b.targets.subarray(row * 8, row * 8 + 8)], [...range(8, 5001 + start)]);
  }
  assert.deepEqual([...b.mask], new Array(32).fill(1));
});

Deno.test("stream batches reach the last window and fail clearly on too little data", () => {
  const b = new StreamBatcher(range(5), 64, 4, 2).next();
  for (let row = 0; row < 64; row++) assert.equal(b.ids[row * 4], 0, "the only window starts at 0");
  assert.deepEqual([...b.targets.subarray(0, 4)], [1, 2, 3, 4]);
  assert.throws(() => new StreamBatcher(range(4), 1, 4, 1), /has 4 tokens, fewer than block size \+ 1 = 5/);
  assert.throws(() => new StreamBatcher(range(40), 0, 4, 1), /batch size 0 must be a positive integer/);
});

Deno.test("same seed gives the same stream batches, another seed others", () => {
  const tokens = range(10_000);
  const a = draw(new StreamBatcher(tokens, 3, 16, 42), 5);
  assert.deepEqual(draw(new StreamBatcher(tokens, 3, 16, 42), 5), a);
  assert.notDeepEqual(draw(new StreamBatcher(tokens, 3, 16, 43), 5), a);
  assert.notDeepEqual(a[1], a[0]);
});

Deno.test("a stream batcher restored from JSON state continues with the same batches", () => {
  const tokens = range(10_000);
  const run = new StreamBatcher(tokens, 2, 8, 9);
  draw(run, 3);
  const saved = JSON.parse(JSON.stringify(run.state()));
  const expected = draw(run, 4);
  const resumed = new StreamBatcher(tokens, 2, 8, 1234);
  resumed.restore(saved);
  assert.deepEqual(draw(resumed, 4), expected);
  assert.throws(
    () => new StreamBatcher(range(500), 2, 8, 9).restore(saved),
    /a stream of 10000 tokens onto a stream of 500/,
  );
});

Deno.test("example rows: loss only on response targets, padding ignored, long examples cut", () => {
  // ids 10 11 | 12 13 (response): targets 11 12 13 count only where the target is in the response.
  const short = example([10, 11, 12, 13], [0, 0, 1, 1]);
  const long = example([20, 21, 22, 23, 24, 25, 26, 27], [0, 1, 1, 1, 1, 1, 1, 1]);
  const [b] = evalExampleBatches([short, long], 5, 2);
  assert.deepEqual(plain(b), {
    ids: [10, 11, 12, 0, 0, 20, 21, 22, 23, 24],
    targets: [11, 12, 13, 0, 0, 21, 22, 23, 24, 25],
    mask: [0, 1, 1, 0, 0, 1, 1, 1, 1, 1],
    batchSize: 2,
    blockSize: 5,
  });
});

Deno.test("example batches go through a shuffled order, epoch after epoch", () => {
  const examples = Array.from({ length: 5 }, (_, i) => example([i, 100 + i], [0, 1]));
  const batcher = new ExampleBatcher(examples, 2, 1, 11);
  const firsts = draw(batcher, 5).flatMap((b) => b.ids);
  assert.deepEqual([...firsts.slice(0, 5)].sort(), [0, 1, 2, 3, 4], "epoch 1 is a permutation");
  assert.deepEqual([...firsts.slice(5, 10)].sort(), [0, 1, 2, 3, 4], "epoch 2 is a permutation");
  assert.notDeepEqual(firsts.slice(0, 5), firsts.slice(5, 10), "each epoch is reshuffled");
  assert.equal(batcher.epoch, 1);
  const again = draw(new ExampleBatcher(examples, 2, 1, 11), 5).flatMap((b) => b.ids);
  assert.deepEqual(again, firsts);
  assert.notDeepEqual(draw(new ExampleBatcher(examples, 2, 1, 12), 5).flatMap((b) => b.ids), firsts);
  assert.throws(() => new ExampleBatcher([], 2, 4, 1), /no examples to batch/);
  assert.throws(() => new ExampleBatcher([example([1], [1])], 2, 4, 1), /example 0 has 1 token\(s\)/);
});

Deno.test("an example batcher restored mid-epoch from JSON state continues with the same batches", () => {
  const examples = Array.from({ length: 7 }, (_, i) => example([i, i + 1, i + 2], [0, 1, 1]));
  const run = new ExampleBatcher(examples, 3, 2, 5);
  draw(run, 3); // 9 examples: into the second epoch
  const saved = JSON.parse(JSON.stringify(run.state()));
  assert.equal(saved.epoch, 1);
  assert.equal(saved.position, 2);
  const expected = draw(run, 6);
  const resumed = new ExampleBatcher(examples, 3, 2, 999);
  resumed.restore(saved);
  assert.deepEqual(draw(resumed, 6), expected);
  assert.equal(resumed.epoch, run.epoch);
  assert.throws(() => resumed.restore({ ...saved, examples: 8 }), /for 8 examples onto 7 examples/);
});

Deno.test("eval windows cut the stream into consecutive windows of T+1, last batch smaller", () => {
  // 23 tokens, T = 3: windows [0..4) [4..8) [8..12) [12..16) [16..20); tokens 20-22 dropped.
  const tokens = range(23, 100);
  assert.equal(evalWindowCount(23, 3), 5);
  const batches = evalWindows(tokens, 3, 2).map(plain);
  assert.deepEqual(batches, [
    {
      ids: [100, 101, 102, 104, 105, 106],
      targets: [101, 102, 103, 105, 106, 107],
      mask: [1, 1, 1, 1, 1, 1],
      batchSize: 2,
      blockSize: 3,
    },
    {
      ids: [108, 109, 110, 112, 113, 114],
      targets: [109, 110, 111, 113, 114, 115],
      mask: [1, 1, 1, 1, 1, 1],
      batchSize: 2,
      blockSize: 3,
    },
    { ids: [116, 117, 118], targets: [117, 118, 119], mask: [1, 1, 1], batchSize: 1, blockSize: 3 },
  ]);
  assert.equal(evalWindowCount(24, 3), 6);
  assert.throws(() => evalWindows(range(3), 3, 2), /has 3 tokens, fewer than block size \+ 1 = 4/);
});

Deno.test("eval example batches keep file order and group B per batch", () => {
  const examples = [example([1, 2], [0, 1]), example([3, 4, 5], [0, 0, 1]), example([6, 7], [1, 1])];
  const batches = evalExampleBatches(examples, 2, 2).map(plain);
  assert.deepEqual(batches, [
    { ids: [1, 0, 3, 4], targets: [2, 0, 4, 5], mask: [1, 0, 0, 1], batchSize: 2, blockSize: 2 },
    { ids: [6, 0], targets: [7, 0], mask: [1, 0], batchSize: 1, blockSize: 2 },
  ]);
});
