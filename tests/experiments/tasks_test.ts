/** The experiment's tasks: train, dev and test are disjoint, sized as asked, and fixed by the seed. */
import { deepEqual, equal, rejects } from "node:assert/strict";
import { Rng } from "../../core/random.ts";
import {
  ARITHMETIC_PROBLEMS,
  arithmeticProblem,
  majorityAnswer,
  makeTasks,
} from "../../experiments/tasks.ts";

Deno.test("each task's train, dev and test splits are disjoint, sized as asked, and fixed by the seed", async () => {
  const sizes = {
    definitions: { train: 48, dev: 16, test: 16 },
    arithmetic: { train: 40, dev: 8, test: 500 },
  };
  const tasks = await makeTasks(sizes, 0, 40);
  for (const t of tasks) {
    const s = sizes[t.name as "definitions" | "arithmetic"];
    deepEqual([t.train.length, t.dev.length, t.test.length], [s.train, s.dev, s.test], t.name);
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

Deno.test("arithmetic problems: one-digit answers that follow from the question, and as many as ARITHMETIC_PROBLEMS", async () => {
  const rng = new Rng(3);
  const seen = new Set<string>();
  for (let i = 0; i < 30000; i++) {
    const p = arithmeticProblem(rng);
    seen.add(p.prompt);
    const m = p.prompt.match(/^Q: [A-Z][a-z]+'s [a-z]+, one more than (\d)$/);
    if (!m) throw new Error(`unexpected problem ${JSON.stringify(p.prompt)}`);
    equal(p.response, `${Number(m[1]) + 1}\n`);
  }
  equal(seen.size, ARITHMETIC_PROBLEMS, "every distinct problem is drawn, and no more exist");
  await rejects(
    makeTasks(
      { definitions: { train: 1, dev: 1, test: 1 }, arithmetic: { train: 800, dev: 100, test: 500 } },
      0,
      40,
    ),
    /only 1260 distinct arithmetic problems exist; asked for 1400/,
  );
});

Deno.test("majorityAnswer: the most frequent training answer and its test accuracy", () => {
  const p = (r: string) => ({ prompt: "q", response: r });
  deepEqual(majorityAnswer([p("1"), p("2"), p("2")], [p("2"), p("3"), p("2"), p("1")]), {
    answer: "2",
    accuracy: 0.5,
  });
});
