/**
 * The comparison itself, with no file access: the base model before fine-tuning, the learning-rate
 * sweep on the definitions dev split, every method on both tasks (full, LoRA r=8 and LISA E+H+2L with
 * every seed), LISA's state policies, `--verify` reruns, `--ablations`, then the statistics, the
 * weight-norm skew and the claims. `deno task experiment` (experiments/main.ts) and the web page run
 * it the same way; each gives the base model's folder (in the current host), the tasks and how one
 * run is carried out (the CLI adds resuming, results.json after every run and progress lines).
 */
import type { Gpu } from "../core/gpu.ts";
import {
  checkClaims,
  meanStd,
  type MethodStats,
  pickLearningRates,
  skewEntries,
  type SweepPoint,
  taskStats,
} from "./analyses.ts";
import type { Preset } from "./presets.ts";
import type { ExperimentRecord } from "./report.ts";
import { type MethodSpec, type RunResult, type RunSpec, scoreBase } from "./runner.ts";
import { majorityAnswer, type Task } from "./tasks.ts";

/** Hex SHA-256 of a JSON value (keys in insertion order). */
export async function hashOf(value: unknown): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(JSON.stringify(value)));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The tasks' names. */
export type TaskName = "definitions" | "arithmetic";

/** The configurations the claims compare, run with every seed of the main table. */
export const SEEDED_KEYS: readonly string[] = ["full", "lora", "lisa"];

/** The method configurations, leaving out LISA with more blocks than the model has. */
export function methodSpecs(nLayer: number): MethodSpec[] {
  const specs: MethodSpec[] = [
    { key: "full", label: "full", method: "full" },
    { key: "lora", label: "LoRA r=8", method: "lora", rank: 8 },
    { key: "lora_r32", label: "LoRA r=32", method: "lora", rank: 32 },
    { key: "lisa_1l", label: "LISA E+H+1L", method: "lisa", gamma: 1 },
    { key: "lisa", label: "LISA E+H+2L", method: "lisa", gamma: 2 },
    { key: "lisa_4l", label: "LISA E+H+4L", method: "lisa", gamma: 4 },
  ];
  return specs.filter((s) => (s.gamma ?? 0) <= nLayer);
}

/** The key of a run in results.json's `runs`: everything that shapes its numbers, readable. */
export function runId(r: RunSpec): string {
  const parts = [
    r.task.name,
    r.split,
    r.spec.key,
    `gamma ${r.spec.gamma ?? "-"}`,
    `rank ${r.spec.rank ?? "-"}`,
    `lr ${r.lr}`,
    `steps ${r.steps}`,
    `batch ${r.batchSize}x${r.blockSize}`,
    `period ${r.period}`,
    `state ${r.state ?? "reset"}`,
    `seed ${r.seed}`,
  ];
  if (r.norms) parts.push("norms");
  if (r.accuracy) parts.push("accuracy");
  return parts.join(" | ");
}

/**
 * The configurations a comparison runs: those the claims compare ({@link SEEDED_KEYS}) always, the
 * others when `extra` names them (default: all).
 */
export function comparisonSpecs(nLayer: number, extra?: readonly string[]): MethodSpec[] {
  return methodSpecs(nLayer).filter((s) => SEEDED_KEYS.includes(s.key) || !extra || extra.includes(s.key));
}

/** Fine-tuning runs of a comparison of `p` without --verify and --ablations: the sweep, the main runs, the policies. */
export function comparisonRunCount(p: Preset, extra?: readonly string[]): number {
  const x = p.experiment;
  const seedsOf = (s: MethodSpec) => (SEEDED_KEYS.includes(s.key) ? x.seeds : 1);
  return (["full", "lora", "lisa"] as const).reduce((n, f) => n + x.lrs[f].length, 0) +
    comparisonSpecs(p.model.nLayer, extra).reduce((n, s) => n + seedsOf(s) * 2, 0) + 2;
}

/** What {@link runComparison} needs. */
export interface ComparisonContext {
  gpu: Gpu;
  /** The preset (already scaled). */
  preset: Preset;
  /** The experiment's seed (tasks, the first fine-tuning seed). */
  seed: number;
  /** The base model's folder, in the current host. */
  baseDir: string;
  /** The tasks: definitions, then arithmetic (tasks.ts `makeTasks`). */
  tasks: Task[];
  /** Carries out one run (`again`: a --verify rerun of it). */
  run: (r: RunSpec, what: string, again?: boolean) => Promise<RunResult>;
  /** Progress lines. */
  log: (message: string) => void;
  /** The adapter as the claims name it, e.g. `llvmpipe (software kernels)`. */
  where: string;
  verify?: boolean;
  ablations?: boolean;
  /** The configurations to run beyond full, LoRA r=8 and LISA E+H+2L (default: all). */
  extra?: readonly string[];
}

/** What a comparison measured: every part of results.json but the run's own description. */
export type ComparisonRecord = Omit<
  ExperimentRecord,
  "command" | "configHash" | "config" | "env" | "base" | "seconds"
>;

/** Runs the comparison of {@link ComparisonContext}; returns its record. */
export async function runComparison(c: ComparisonContext): Promise<ComparisonRecord> {
  const { gpu, preset: p, seed, baseDir, tasks, run, log } = c;
  const x = p.experiment;
  const o = { verify: c.verify, ablations: c.ablations };
  const families = ["full", "lora", "lisa"] as const;
  // 3. Methods.
  const [definitions, arithmetic] = tasks;
  const settingsOf = (t: Task) => x.tasks[t.name as TaskName];
  const specs = comparisonSpecs(p.model.nLayer, c.extra);
  const spec = (key: string) => specs.find((s) => s.key === key)!;
  const seeds = Array.from({ length: x.seeds }, (_, i) => seed + i);
  const seedsOf = (s: MethodSpec) => (SEEDED_KEYS.includes(s.key) ? seeds : [seed]);
  const common = { base: baseDir, batchSize: x.batchSize, period: x.period, seed };
  /** The run of `s` on `task` with the task's rows and steps, scored on test. */
  const mainRun = (s: MethodSpec, task: Task, runSeed: number, lr: number): RunSpec => ({
    ...common,
    seed: runSeed,
    task,
    split: "test",
    spec: s,
    lr,
    blockSize: settingsOf(task).blockSize,
    steps: settingsOf(task).steps,
    accuracy: task.exactMatch,
  });

  // The base model before fine-tuning, on each task's test split: what every method starts from.
  const before = {} as ExperimentRecord["before"];
  for (const task of tasks) {
    const score = await scoreBase(gpu, baseDir, task, "test", x.batchSize, settingsOf(task).blockSize);
    before[task.name as TaskName] = score;
    log(
      `experiment: before fine-tuning, ${task.name}: test loss ${score.evalLoss.toFixed(4)}${
        score.accuracy === null ? "" : `, accuracy ${(score.accuracy * 100).toFixed(1)}% of ${score.heldOut}`
      }`,
    );
  }

  const majority = majorityAnswer(arithmetic.train, arithmetic.test);

  // Learning rate per family: short runs on the definitions task, best loss on its dev split (never test).
  const sweep: SweepPoint[] = [];
  for (const family of families) {
    for (const lr of x.lrs[family]) {
      const r = await run(
        {
          ...common,
          task: definitions,
          split: "dev",
          spec: spec(family),
          lr,
          blockSize: x.tasks.definitions.blockSize,
          steps: x.sweepSteps,
        },
        `sweep ${family} lr ${lr}`,
      );
      sweep.push({ family, lr, devLoss: r.evalLoss });
    }
  }
  const lrs = pickLearningRates(sweep);
  const lrOf = (s: MethodSpec) => lrs[s.method];

  // 4. The main runs: every method on both tasks; full, LoRA r=8 and LISA E+H+2L with every seed.
  const runs: ExperimentRecord["runs"] = {};
  const seedRuns: ExperimentRecord["seedRuns"] = {};
  const mainSpecs: [RunSpec, RunResult][] = [];
  for (const s of specs) {
    const all: Record<TaskName, RunResult[]> = { definitions: [], arithmetic: [] };
    for (const task of tasks) {
      for (const sd of seedsOf(s)) {
        const r = mainRun(s, task, sd, lrOf(s));
        if (task === definitions && sd === seed) r.norms = s.key === "full" || s.key === "lora";
        const res = await run(r, `${s.label} on ${task.name}, seed ${sd}`);
        mainSpecs.push([r, res]);
        all[task.name as TaskName].push(res);
      }
    }
    seedRuns[s.key] = all;
    runs[s.key] = { definitions: all.definitions[0], arithmetic: all.arithmetic[0] };
  }
  const policies: Record<string, RunResult> = {};
  for (const state of ["keep", "offload"] as const) {
    policies[`lisa_${state}`] = await run(
      { ...mainRun(spec("lisa"), definitions, seed, lrs.lisa), state },
      `LISA E+H+2L (${state}) on definitions`,
    );
  }

  // --verify: every main run again, the losses must be bitwise identical.
  let verified: boolean | null = null;
  if (o.verify) {
    verified = true;
    for (const [r, first] of mainSpecs) {
      const again = await run(r, `verify ${r.spec.label} on ${r.task.name}, seed ${r.seed}`, true);
      if (again.trainLoss.some((l, i) => l !== first.trainLoss[i]) || again.evalLoss !== first.evalLoss) {
        verified = false;
      }
    }
    if (!verified) log("experiment: --verify found different losses in a rerun");
  }

  // 6. Ablations: LISA γ × K against LoRA r = 8, several seeds.
  let ablations: ExperimentRecord["ablations"];
  if (o.ablations) {
    ablations = [];
    const configs: [string, MethodSpec, number][] = [["LoRA r=8", spec("lora"), x.period]];
    for (const g of x.ablation.gammas.filter((g) => g <= p.model.nLayer)) {
      for (const k of x.ablation.periods) {
        configs.push([`LISA γ=${g} K=${k}`, { ...spec("lisa"), gamma: g }, k]);
      }
    }
    for (const [name, s, period] of configs) {
      const losses: number[] = [], accs: number[] = [];
      for (const sd of x.ablation.seeds) {
        const d = await run(
          { ...mainRun(s, definitions, sd, lrOf(s)), period },
          `ablation ${name} seed ${sd}`,
        );
        const a = await run(
          { ...mainRun(s, arithmetic, sd, lrOf(s)), period },
          `ablation ${name} seed ${sd} (arithmetic)`,
        );
        losses.push(d.evalLoss);
        accs.push(a.accuracy ?? 0);
      }
      ablations.push({ label: name, evalLoss: meanStd(losses), accuracy: meanStd(accs), n: losses.length });
    }
  }

  const skew = {
    full: runs.full?.definitions.norms ? skewEntries(runs.full.definitions.norms) : undefined,
    lora: runs.lora?.definitions.norms ? skewEntries(runs.lora.definitions.norms) : undefined,
  };
  const stats: MethodStats = Object.fromEntries(
    Object.entries(seedRuns).map((
      [k, v],
    ) => [k, { definitions: taskStats(v.definitions), arithmetic: taskStats(v.arithmetic) }]),
  );
  return {
    before,
    majority,
    specs,
    runs,
    seedRuns,
    stats,
    policies,
    splits: Object.fromEntries(
      tasks.map((t) => [t.name, { train: t.train.length, dev: t.dev.length, test: t.test.length }]),
    ),
    sweep,
    lrs,
    skew,
    claims: checkClaims(runs, stats, skew, c.where),
    ablations,
    verified,
  };
}
