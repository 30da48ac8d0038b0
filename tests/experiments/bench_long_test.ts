/** The long-run leak bench: what counts as flat, and a short run of every method. */
import { deepEqual, equal, ok } from "node:assert/strict";
import { HEAP_SLACK, isFlat, longRun, summarize, syntheticStream } from "../../experiments/bench_long.ts";
import { gpuTest } from "../helpers.ts";

const MiB = 2 ** 20;

Deno.test("the heap's floors ignore a garbage-collection sawtooth but catch a rising floor", () => {
  // The first sample just after a collection, the last just before one; the floors are equal.
  const sawtooth = Array.from({ length: 104 }, (_, i) => (10 + (i % 7) * 4) * MiB);
  const saw = summarize(sawtooth, true);
  deepEqual(saw, { start: 10 * MiB, end: 10 * MiB, max: 34 * MiB });
  equal(isFlat(saw, HEAP_SLACK), true);
  equal(isFlat(summarize(sawtooth), HEAP_SLACK), false, "first vs last sample would call it a leak");
  // 200 KiB kept per window: 20 MiB over the run, beyond the slack.
  const leak = sawtooth.map((v, i) => v + i * 200 * 1024);
  equal(isFlat(summarize(leak, true), HEAP_SLACK), false);
});

Deno.test("GPU bytes must end exactly where they started, within 1%", () => {
  equal(isFlat(summarize([1000, 1200, 1005])), true);
  equal(isFlat(summarize([1000, 1000, 1011])), false);
});

gpuTest("a short long run of each method keeps live and reserved GPU bytes flat", async (gpu) => {
  const tokens = syntheticStream(1 << 14, 0);
  for (const method of ["full", "lora", "lisa"] as const) {
    const r = await longRun(gpu, method, 30, tokens);
    equal(r.steps, 30);
    equal(r.live.end, r.live.start, `${method}: live bytes`);
    ok(
      r.reserved.end <= r.reserved.start * 1.01,
      `${method}: reserved ${r.reserved.start} → ${r.reserved.end}`,
    );
    ok(r.live.start > 0 && r.heap.start > 0);
  }
});
