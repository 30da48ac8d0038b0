/** The experiment's tasks: train, dev and test are disjoint, sized as asked, and fixed by the seed. */
import { deepEqual, equal } from "node:assert/strict";
import { makeTasks } from "../../experiments/tasks.ts";

Deno.test("each task's train, dev and test splits are disjoint, sized as asked, and fixed by the seed", async () => {
  const sizes = { train: 48, dev: 16, test: 16 };
  const tasks = await makeTasks(sizes, 0, 40);
  for (const t of tasks) {
    deepEqual([t.train.length, t.dev.length, t.test.length], [48, 16, 16], t.name);
    const key = (p: { prompt: string; response: string }) => `${p.prompt}\u0000${p.response}`;
    const all = [...t.train, ...t.dev, ...t.test].map(key);
    equal(new Set(all).size, all.length, `${t.name}: no example is in two splits`);
    // Arithmetic prompts are unique; a definitions prompt names its word: no word is in two splits.
    const prompts = [...t.train, ...t.dev, ...t.test].map((p) => p.prompt);
    equal(new Set(prompts).size, prompts.length, `${t.name}: no prompt is in two splits`);
  }
  deepEqual(await makeTasks(sizes, 0, 40), tasks, "the same seed gives the same splits");
  const other = await makeTasks(sizes, 1, 40);
  equal(
    other[0].test.some((p, i) => p.prompt !== tasks[0].test[i].prompt),
    true,
    "another seed, other splits",
  );
});
