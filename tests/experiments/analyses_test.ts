/** The report's statistics: Wilson intervals, the two-standard-error rule, and claims judged by it. */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import {
  checkClaims,
  type MethodStats,
  stat,
  taskStats,
  twoSeVerdict,
  wilson,
} from "../../experiments/analyses.ts";
import type { RunResult } from "../../experiments/runner.ts";

const close = (a: number, b: number, tol = 5e-5) => Math.abs(a - b) <= tol;

Deno.test("wilson gives the textbook 95% intervals and stays inside [0, 1]", () => {
  // Reference values: Wilson (1927) score interval, z = 1.96 (e.g. Agresti & Coull 1998, Table 1).
  const cases: [number, number, number, number][] = [
    [0, 10, 0, 0.2775],
    [5, 10, 0.2366, 0.7634],
    [10, 10, 0.7225, 1],
    [50, 500, 0.0767, 0.1294],
  ];
  for (const [k, n, lo, hi] of cases) {
    const [a, b] = wilson(k, n);
    ok(close(a, lo) && close(b, hi), `${k}/${n}: [${a}, ${b}] vs [${lo}, ${hi}]`);
  }
  throws(() => wilson(3, 0), /3 hits of 0 trials/);
  throws(() => wilson(11, 10), /11 hits of 10 trials/);
});

Deno.test("the two-SE rule: beyond 2 SE decides, within it is inconclusive, no SE is inconclusive", () => {
  equal(twoSeVerdict(0.05, 0.02), "supported");
  equal(twoSeVerdict(0.03, 0.02), "inconclusive");
  equal(twoSeVerdict(-0.05, 0.02), "not supported");
  // "matches or beats" with a margin: a small deficit within the margin, resolved, is supported.
  equal(twoSeVerdict(-0.005, 0.003, 0.01), "inconclusive");
  equal(twoSeVerdict(-0.002, 0.001, 0.01), "supported");
  equal(twoSeVerdict(-0.05, 0.01, 0.01), "not supported");
  equal(twoSeVerdict(1, NaN), "inconclusive");
  deepEqual(stat([1, 2, 3]), { mean: 2, std: 1, n: 3, values: [1, 2, 3] });
});

/** A run with only the fields the claims read. */
function fake(evalLoss: number, accuracy: number | null, ms: number, peak = 10, optimizer = 1): RunResult {
  const memory = { weights: 0, grads: 0, optimizer, activations: 0, workspace: 0 };
  return {
    key: "x",
    task: "t",
    lr: 1,
    seed: 0,
    trainLoss: [],
    evalLoss,
    accuracy,
    hits: accuracy === null ? null : Math.round(accuracy * 500),
    heldOut: accuracy === null ? 64 : 500,
    split: "test",
    msPerStep: ms,
    tokensPerSec: 1,
    compiles: { count: 0, ms: 0 },
    memory: { peakBytes: peak, peak: memory },
    timeline: [],
  };
}

Deno.test("quality claims follow the rule on seed statistics, and one seed gives no verdict", () => {
  const method = (loss: number[], acc: number[], ms: number) => ({
    definitions: loss.map((l) => fake(l, null, ms)),
    arithmetic: loss.map((l, i) => fake(l, acc[i], ms)),
  });
  const seeds = {
    full: method([2.50, 2.52, 2.51], [0.30, 0.32, 0.31], 300),
    lora: method([2.70, 2.71, 2.69], [0.10, 0.11, 0.09], 400),
    lisa: method([2.49, 2.50, 2.51], [0.31, 0.30, 0.32], 200),
  };
  const stats: MethodStats = Object.fromEntries(
    Object.entries(seeds).map(([k, v]) => [k, {
      definitions: taskStats(v.definitions),
      arithmetic: taskStats(v.arithmetic),
    }]),
  );
  const first = Object.fromEntries(
    Object.entries(seeds).map((
      [k, v],
    ) => [k, { definitions: v.definitions[0], arithmetic: v.arithmetic[0] }]),
  );
  const verdict = (start: string, c = checkClaims(first, stats, {})) =>
    c.find((x) => x.claim.startsWith(start))!.verdict;
  equal(verdict("LISA matches or beats full fine-tuning (test loss, definitions)"), "supported");
  equal(verdict("LISA beats LoRA (test loss, definitions)"), "supported");
  equal(verdict("LISA's task accuracy beats LoRA's"), "supported");
  // 0.31 vs 0.31 on 500 problems: the binomial error (±2.9 points at 2 SE) exceeds the 1-point margin.
  equal(verdict("LISA's task accuracy matches or beats full"), "inconclusive");
  equal(verdict("LISA's steps are faster"), "supported");
  // Seed spread decides: LISA's mean is lower than LoRA's, but the seeds scatter across it.
  const noisy = {
    ...stats,
    lisa: { ...stats.lisa, definitions: taskStats(method([2.2, 3.1, 2.6], [0, 0, 0], 200).definitions) },
  };
  equal(verdict("LISA beats LoRA (test loss, definitions)", checkClaims(first, noisy, {})), "inconclusive");
  // One seed per method: no standard error, no verdict.
  const one: MethodStats = Object.fromEntries(
    Object.entries(seeds).map(([k, v]) => [k, {
      definitions: taskStats(v.definitions.slice(0, 1)),
      arithmetic: taskStats(v.arithmetic.slice(0, 1)),
    }]),
  );
  for (const c of checkClaims(first, one, {}).filter((c) => /test loss|accuracy/.test(c.claim))) {
    equal(c.verdict, "inconclusive", c.claim);
  }
});
