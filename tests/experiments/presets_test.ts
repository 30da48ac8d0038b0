/** Presets: every one's tasks can be made, and `scalePreset` shrinks steps and data with working minimums. */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { PRESETS, scalePreset } from "../../experiments/presets.ts";
import { makeTasks } from "../../experiments/tasks.ts";

Deno.test("every preset's task splits exist (distinct problems, WordNet definitions that fit)", async () => {
  for (const p of Object.values(PRESETS)) {
    const x = p.experiment;
    const tasks = await makeTasks(x.tasks, 0, x.maxDefinitionChars);
    for (const t of tasks) {
      const s = x.tasks[t.name as "definitions" | "arithmetic"];
      deepEqual(
        [t.train.length, t.dev.length, t.test.length],
        [s.train, s.dev, s.test],
        `${p.name} ${t.name}`,
      );
    }
    ok(
      x.tasks.arithmetic.test >= 500 || p.name === "tiny",
      `${p.name}: at least 500 arithmetic test problems`,
    );
  }
});

Deno.test("scalePreset multiplies steps and sizes, keeps minimums and the model, and rejects bad factors", () => {
  const p = PRESETS.bpe;
  const s = scalePreset(p, 0.01);
  deepEqual(s.model, p.model);
  equal(s.steps, 40);
  equal(s.warmup, 2, "warmup scaled, at most a tenth of the steps");
  equal(s.evalEvery, 5);
  equal(s.experiment.sweepSteps, 2, "a run needs two steps (warmup, then decay)");
  equal(s.experiment.period, 1, "K = 20 × 0.01 rounds to 0: kept at 1");
  deepEqual(s.experiment.tasks.definitions, { train: 20, dev: 4, test: 8, blockSize: 64, steps: 3 });
  deepEqual(s.experiment.tasks.arithmetic, { train: 8, dev: 4, test: 8, blockSize: 32, steps: 3 });
  ok(s.valTokens >= s.batchSize * (s.blockSize + 1), "at least one validation batch");
  equal(scalePreset(p, 1), p);
  for (const bad of [0, -1, 1.5, NaN]) throws(() => scalePreset(p, bad), /scale must be in \(0, 1\]/);
});
