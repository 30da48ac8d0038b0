/** `deno task experiment --preset tiny` as a smoke test: the report's structure, and numbers that are real. */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { experiment } from "../../experiments/main.ts";
import { CATEGORIES } from "../../core/memory.ts";
import { cacheTempDir, testGpu } from "../helpers.ts";

Deno.test({
  name:
    "the tiny experiment writes a complete report whose numbers are measured (LISA E+H+1L holds less optimizer state than full)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const out = await cacheTempDir("experiment-test-");
    await experiment({
      preset: "tiny",
      out,
      fresh: true,
      quiet: true,
      gpu: await testGpu(),
      command: "test",
    });
    const r = JSON.parse(await Deno.readTextFile(`${out}/results.json`));
    for (const k of ["adapter", "backend", "deno", "os", "commit", "dirty"]) ok(k in r.env, `env.${k}`);
    ok(r.config.configHash.length === 64);
    deepEqual(Object.keys(r.methods).sort(), ["full", "lisa", "lisa_1l", "lora", "lora_r32"]);
    type M = {
      trainLoss: number[];
      evalLoss: number;
      accuracy: number;
      msPerStep: number;
      tokensPerSec: number;
    };
    for (
      const [key, m] of Object.entries(r.methods) as [
        string,
        M & { memory: { peakBytes: number; peak: Record<string, number> } },
      ][]
    ) {
      equal(m.trainLoss.length, r.config.tasks.definitions.steps, `${key} trainLoss`);
      ok(m.trainLoss.every(Number.isFinite) && Number.isFinite(m.evalLoss), `${key} losses`);
      ok(m.accuracy >= 0 && m.accuracy <= 1, `${key} accuracy`);
      ok(m.msPerStep > 0 && m.tokensPerSec > 0, `${key} speed`);
      deepEqual(Object.keys(m.memory.peak).sort(), [...CATEGORIES].sort());
      // The run's peak of all categories together lies between its largest category and their sum.
      const peaks = CATEGORIES.map((c) => m.memory.peak[c]);
      ok(m.memory.peakBytes <= peaks.reduce((a, b) => a + b, 0), `${key}: peak ≤ sum of category peaks`);
    }
    const opt = (k: string) => r.methods[k].memory.peak.optimizer;
    ok(opt("lisa_1l") < opt("full"), `LISA E+H+1L optimizer ${opt("lisa_1l")} < full ${opt("full")}`);
    ok(opt("lora") < opt("lisa_1l"), "LoRA r=8 holds the least optimizer state");
    ok(r.methods.lisa_1l.memory.peak.grads < r.methods.full.memory.peak.grads);
    equal(r.weightNormSkew.full.length, 2 + 2, "embedding, 2 blocks, head");
    equal(r.weightNormSkew.lora[0].updateNorm, 0, "LoRA's embedding does not train");
    ok(r.lrSweep.length >= 6 && r.claims.length >= 5);
    // Choices on dev, numbers from test: each sweep point is a dev run; every reported run a test run.
    for (const task of ["definitions", "arithmetic"]) {
      const { train, dev, test } = r.config.tasks[task];
      deepEqual(r.splits[task], { train, dev, test });
    }
    const runs = Object.values(r.runs) as {
      split: string;
      evalLoss: number;
      lr: number;
      trainLoss: number[];
    }[];
    const dev = runs.filter((x) => x.split === "dev");
    equal(dev.length, r.lrSweep.length, "the sweep's runs, and only they, are scored on dev");
    for (const p of r.lrSweep) {
      ok(dev.some((x) => x.lr === p.lr && x.evalLoss === p.devLoss), `sweep point lr ${p.lr} is a dev loss`);
    }
    for (
      const [key, m] of Object.entries(r.methods) as [string, { tasks: Record<string, { split: string }> }][]
    ) {
      equal(m.tasks.definitions.split, "test", `${key}: reported from test`);
      equal(m.tasks.arithmetic.split, "test", `${key}: reported from test`);
    }
    // Seeds: full, LoRA r=8 and LISA E+H+2L with every seed, the others with the first; the stats
    // are those of the runs themselves, and different seeds train differently.
    const seeds = Array.from({ length: r.config.seeds }, (_, i) => r.config.seed + i);
    type S = { mean: number; std: number; n: number; values: number[] };
    type TS = { testLoss: S; accuracy: S | null; wilson: [number, number] | null; items: number };
    for (
      const [key, m] of Object.entries(r.methods) as [
        string,
        { seeds: number[]; stats: Record<string, TS> },
      ][]
    ) {
      deepEqual(m.seeds, ["full", "lora", "lisa"].includes(key) ? seeds : [r.config.seed], `${key} seeds`);
      for (const task of ["definitions", "arithmetic"]) {
        const st = m.stats[task];
        const mine = Object.values(
          r.runs as Record<
            string,
            {
              key: string;
              task: string;
              split: string;
              seed: number;
              evalLoss: number;
              accuracy: number | null;
              state?: string;
            }
          >,
        )
          .filter((x) => x.key === key && x.task === task && x.split === "test");
        const bySeed = m.seeds.map((sd) => mine.find((x) => x.seed === sd)!);
        deepEqual(st.testLoss.values, bySeed.map((x) => x.evalLoss), `${key} ${task} losses are its runs'`);
        equal(st.testLoss.n, m.seeds.length);
        const mean = st.testLoss.values.reduce((a, b) => a + b, 0) / st.testLoss.n;
        ok(Math.abs(st.testLoss.mean - mean) < 1e-12);
        if (task === "arithmetic") {
          deepEqual(st.accuracy!.values, bySeed.map((x) => x.accuracy));
          equal(st.items, r.config.tasks.arithmetic.test);
          ok(st.wilson![0] <= st.accuracy!.mean && st.accuracy!.mean <= st.wilson![1], `${key} Wilson`);
        } else equal(st.accuracy, null);
      }
    }
    const lisaLosses = r.methods.lisa.stats.definitions.testLoss.values;
    ok(lisaLosses[0] !== lisaLosses[1], "another seed, another run");
    // Before fine-tuning: the base model on both test splits, accuracy with its interval.
    const b = r.beforeFineTuning;
    ok(Number.isFinite(b.definitions.evalLoss) && b.definitions.accuracy === null);
    equal(b.arithmetic.heldOut, r.config.tasks.arithmetic.test);
    equal(b.arithmetic.accuracy, b.arithmetic.hits / b.arithmetic.heldOut);
    ok(b.arithmetic.wilson[0] <= b.arithmetic.accuracy && b.arithmetic.accuracy <= b.arithmetic.wilson[1]);
    ok(r.claimRule.includes("2·SE"), "results.json states the claims' rule");
    ok(
      typeof r.majorityAnswer.answer === "string" && r.majorityAnswer.accuracy >= 0,
      "the majority-answer floor",
    );
    const speed = r.claims.find((c: { claim: string }) => c.claim.startsWith("LISA's steps are faster"));
    ok(speed && speed.evidence.includes(r.env.adapter), "the speed claim names the adapter");
    const ms = (k: string) => Math.round(r.methods[k].stats.definitions.msPerStep.mean);
    ok(
      speed.evidence.startsWith(
        `ms/step ${ms("lisa")} (LISA E+H+2L), ${ms("lora")} (LoRA r=8), ${ms("full")}`,
      ),
    );
    const report = await Deno.readTextFile(`${out}/report.md`);
    for (
      const h of [
        "## What was run",
        "## Results",
        "## Weight-norm skew",
        "## Claims checked",
        "## Reproducibility",
      ]
    ) {
      ok(report.includes(h), h);
    }
    for (
      const svg of [
        "loss_curves",
        "memory_by_category",
        "memory_timeline",
        "weight_norm_skew",
        "update_norm_skew",
      ]
    ) {
      ok((await Deno.readTextFile(`${out}/${svg}.svg`)).startsWith("<svg"), svg);
    }

    // A crash after all but one run: --resume reuses the others (their timings are the first run's)
    // and runs the missing one again.
    equal(r.complete, true);
    const ids = Object.keys(r.runs);
    equal(ids.length >= 24, true, `results.json keeps every run (${ids.length})`);
    const lost = ids.at(-1)!;
    const partial = { complete: false, config: r.config, env: r.env, runs: { ...r.runs } };
    delete partial.runs[lost];
    await Deno.writeTextFile(`${out}/results.json`, JSON.stringify(partial));
    await experiment({
      preset: "tiny",
      out,
      resume: true,
      quiet: true,
      gpu: await testGpu(),
      command: "test",
    });
    const again = JSON.parse(await Deno.readTextFile(`${out}/results.json`));
    equal(again.complete, true);
    deepEqual(Object.keys(again.runs).sort(), [...ids].sort());
    for (const id of ids.slice(0, -1)) equal(again.runs[id].msPerStep, r.runs[id].msPerStep, `${id} reused`);
    deepEqual(again.runs[lost].trainLoss, r.runs[lost].trainLoss, "the rerun repeats its losses");
    await Deno.writeTextFile(
      `${out}/results.json`,
      JSON.stringify({ ...partial, config: { configHash: "x" } }),
    );
    await rejects(
      experiment({ preset: "tiny", out, resume: true, quiet: true, gpu: await testGpu() }),
      /--resume: .*results.json is from another configuration/,
    );
    await Deno.remove(out, { recursive: true });
  },
});
