/**
 * `deno task experiment [--preset small|tiny|llama-small|bpe|gpt2] [--out DIR] [--fresh] [--resume] [--verify]
 * [--ablations] [--seed S] [--scale F] [--quiet]`: the project's main job. Pretrains the preset's base
 * model (GPT-2, or LLaMA for llama-small) on the Brown corpus
 * (or reuses the cached one with the same config hash; `--fresh` rebuilds), makes the two tasks,
 * sweeps the learning rate per method family, fine-tunes full, LoRA (r = 8, 32) and LISA (E+H+1L,
 * 2L, 4L) on both tasks with the same steps, batches, schedule and seed, measures loss, accuracy,
 * memory by category, speed and the weight-norm skew, checks the paper's claims, and writes
 * report.md, results.json and SVG plots to `--out` (default `reports/<date>-<preset>/`).
 * results.json is rewritten after every run (`complete: false` until the report is written), so a
 * crash loses no finished run: `--resume` skips the runs it holds. A base-model pretraining cut
 * short continues from its checkpoint.
 */
import { runChild } from "./child.ts";
import { type Gpu, requestGpu } from "../core/gpu.ts";
import { ensureWritableDir, flagChoice, FlagError, flagNumber, parseFlags, runCli } from "./flags.ts";
import { writeFileAtomic } from "../core/io/safetensors.ts";
import { type Preset, PRESETS, scalePreset } from "./presets.ts";
import { pretrain } from "./pretrain.ts";
import { formatDuration } from "./progress.ts";
import { type ExperimentRecord, writeReport } from "./report.ts";
import { runOne, type RunResult, type RunSpec } from "./runner.ts";
import { comparisonRunCount, hashOf, runComparison, runId } from "./comparison.ts";

export { hashOf, methodSpecs, runId, SEEDED_KEYS } from "./comparison.ts";
import { makeTasks } from "./tasks.ts";

/** Options of {@link experiment}. */
export interface ExperimentOptions {
  /** A preset's name, or a preset (tests build their own). */
  preset: string | Preset;
  /** Every step count and data size times this (0 < scale ≤ 1; default 1): `scalePreset`. */
  scale?: number;
  out?: string;
  fresh?: boolean;
  /** Reuse the runs an earlier, interrupted experiment with the same config left in out/results.json. */
  resume?: boolean;
  verify?: boolean;
  ablations?: boolean;
  seed?: number;
  quiet?: boolean;
  /** The command line recorded in the report. */
  command?: string;
  gpu?: Gpu;
}

async function git(args: string[]): Promise<string | null> {
  const out = await runChild("git", args);
  return "error" in out || !out.ok ? null : out.stdout;
}

/** Runs the whole experiment and writes the report; returns what it wrote. */
export async function experiment(o: ExperimentOptions): Promise<{ dir: string; record: ExperimentRecord }> {
  const t0 = performance.now();
  const log = (m: string) => o.quiet || console.error(m);
  const named = typeof o.preset === "string"
    ? PRESETS[flagChoice("preset", o.preset, Object.keys(PRESETS))]
    : o.preset;
  const scale = o.scale ?? 1;
  if (!(scale > 0 && scale <= 1)) throw new FlagError(`--scale ${scale}: expected a number in (0, 1]`);
  const p = scalePreset(named, scale);
  const x = p.experiment;
  const seed = o.seed ?? 0;
  const date = new Date().toISOString().slice(0, 10);
  const dir = o.out ?? `reports/${date}-${p.name}`;
  // Before any work: a run must never end unable to write what it measured.
  await ensureWritableDir(dir);
  await ensureWritableDir(".cache", "out (the base-model cache .cache/ in the current folder)");
  const config = { preset: p.name, scale, model: p.model, seed, ...x };
  const configHash = await hashOf(config);
  const resultsPath = `${dir}/results.json`;
  const done = new Map<string, RunResult>();
  if (o.resume) {
    const prior = await Deno.readTextFile(resultsPath).then((t) => JSON.parse(t), () => null);
    if (!prior) throw new FlagError(`--resume: no results.json in ${dir} to resume from`);
    if (prior.config?.configHash !== configHash) {
      throw new FlagError(
        `--resume: ${resultsPath} is from another configuration (config hash ${
          String(prior.config?.configHash).slice(0, 12)
        }, this one ${configHash.slice(0, 12)})`,
      );
    }
    for (const [id, r] of Object.entries(prior.runs ?? {})) done.set(id, r as RunResult);
    log(`experiment: resuming with ${done.size} runs already in ${resultsPath}`);
  }
  const gpu = o.gpu ?? await requestGpu();
  const commit = (await git(["rev-parse", "HEAD"])) ?? "unknown";
  const dirty = ((await git(["status", "--porcelain", "--untracked-files=no"])) ?? "") !== "";
  const env: ExperimentRecord["env"] = {
    adapter: gpu.info.description,
    backend: gpu.info.backend,
    kernels: gpu.kernels,
    deno: Deno.version.deno,
    os: `${Deno.build.os} ${Deno.build.arch}`,
    commit,
    dirty,
  };
  const command = o.command ??
    `deno task experiment --preset ${p.name}${scale === 1 ? "" : ` --scale ${scale}`}`;
  /** Rewrites results.json with every run so far (complete: false until the report is written). */
  const savePartial = () =>
    writeFileAtomic(
      resultsPath,
      JSON.stringify(
        { complete: false, config: { ...config, configHash, command }, env, runs: Object.fromEntries(done) },
        null,
        1,
      ) + "\n",
    );

  // 1. The base model, cached by the hash of everything that shapes it.
  const baseConfig = {
    preset: p.name,
    ...(scale === 1 ? {} : { scale }),
    model: p.model,
    batchSize: p.batchSize,
    blockSize: p.blockSize,
    steps: p.steps,
    lr: p.lr,
    seed,
  };
  const baseHash = (await hashOf(baseConfig)).slice(0, 12);
  const baseDir = `.cache/base-${p.name}-${baseHash}`;
  let base: ExperimentRecord["base"];
  const exists = (path: string) => Deno.stat(path).then(() => true, () => false);
  const cached = !o.fresh && await exists(`${baseDir}/metrics.json`);
  if (cached) {
    const m = JSON.parse(await Deno.readTextFile(`${baseDir}/metrics.json`));
    base = { dir: baseDir, reused: true, valLoss: m.valLoss, steps: m.steps.length, seconds: 0 };
    log(`experiment: reusing the base model in ${baseDir} (validation loss ${m.valLoss.toFixed(4)})`);
  } else {
    const tb = performance.now();
    // A pretraining cut short (no metrics.json yet) continues from its checkpoint.
    const resume = !o.fresh && await exists(`${baseDir}/checkpoint/trainer.json`);
    log(
      `experiment: ${
        resume ? "resuming" : "pretraining"
      } the ${p.name} base model (${p.steps} steps) in ${baseDir}`,
    );
    if (!resume) await Deno.remove(baseDir, { recursive: true }).catch(() => {});
    const m = await pretrain({
      preset: p,
      steps: p.steps,
      out: baseDir,
      seed,
      resume,
      quiet: o.quiet,
      gpu,
    });
    base = {
      dir: baseDir,
      reused: false,
      valLoss: m.valLoss,
      steps: m.steps.length,
      seconds: (performance.now() - tb) / 1000,
    };
  }

  // 2. Tasks, then the comparison.
  const tasks = await makeTasks(x.tasks, seed, x.maxDefinitionChars);
  let count = 0;
  const total = comparisonRunCount(p);
  /** Runs `r` (or takes it from results.json on --resume) and saves results.json with it. */
  const run = async (r: RunSpec, what: string, again = false): Promise<RunResult> => {
    const id = `${again ? "verify " : ""}${runId(r)}`;
    count++;
    const prior = done.get(id);
    if (prior) {
      log(`experiment: [${count}/${total}] ${what}: from results.json`);
      return prior;
    }
    const res = await runOne(gpu, r);
    done.set(id, res);
    await savePartial();
    log(
      `experiment: [${count}/${total}] ${what}: ${res.split} loss ${res.evalLoss.toFixed(4)}${
        res.accuracy === null ? "" : `, accuracy ${(res.accuracy * 100).toFixed(1)}% of ${res.heldOut}`
      }, ${Math.round(res.msPerStep)} ms/step, peak ${(res.memory.peakBytes / 2 ** 20).toFixed(1)} MiB ` +
        `(${formatDuration((performance.now() - t0) / 1000)} so far)`,
    );
    return res;
  };
  log(`experiment: ${total} fine-tuning runs`);
  const comparison = await runComparison({
    gpu,
    preset: p,
    seed,
    baseDir,
    tasks,
    run,
    log,
    where: `${env.adapter} (${env.kernels} kernels)`,
    verify: o.verify,
    ablations: o.ablations,
  });
  const verified = comparison.verified;
  const record: ExperimentRecord = {
    command,
    configHash,
    config,
    env,
    base,
    ...comparison,
    seconds: (performance.now() - t0) / 1000,
  };
  await writeReport(dir, record, Object.fromEntries(done));
  log(`experiment: report in ${dir}/report.md (${formatDuration(record.seconds)})`);
  if (verified === false) throw new Error(`--verify: reruns gave different losses; see ${dir}/report.md`);
  return { dir, record };
}

/** The usage line printed after a bad command line. */
export const EXPERIMENT_USAGE = `deno task experiment [--preset ${
  Object.keys(PRESETS).join("|")
}] [--out DIR] [--fresh] [--resume] [--verify] [--ablations] [--seed S] [--scale F] [--quiet]`;

if (import.meta.main) {
  await runCli("experiment", EXPERIMENT_USAGE, async () => {
    const values = parseFlags(Deno.args, {
      preset: { type: "string", default: "small" },
      out: { type: "string" },
      fresh: { type: "boolean" },
      resume: { type: "boolean" },
      verify: { type: "boolean" },
      ablations: { type: "boolean" },
      seed: { type: "string", default: "0" },
      scale: { type: "string", default: "1" },
      quiet: { type: "boolean" },
    });
    const { dir } = await experiment({
      preset: values.preset,
      out: values.out,
      fresh: values.fresh,
      resume: values.resume,
      verify: values.verify,
      ablations: values.ablations,
      seed: flagNumber("seed", values.seed, "integer"),
      scale: flagNumber("scale", values.scale),
      quiet: values.quiet,
      command: ["deno task experiment", ...Deno.args].join(" "),
    });
    console.log(JSON.stringify({ report: `${dir}/report.md`, results: `${dir}/results.json` }));
  });
}
