/**
 * `deno task pretrain --preset tiny|small|llama-small|bpe|gpt2 [--steps N] [--out DIR] [--seed S] [--resume]
 * [--checkpoint-every N] [--stop-after N]`: trains a fresh model of the preset's family (GPT-2 or
 * LLaMA) on the Brown corpus with a progress
 * bar, evaluates periodically, and writes to DIR a Hugging Face directory (config.json,
 * model.safetensors), a resumable checkpoint/ (every N steps, default a quarter of the run, and at
 * the end), steps.jsonl (appended as steps are read back), the validation tokens it was scored on
 * (val.bin) and metrics.json. The last stdout line is JSON: {"valLoss", "tokens", "steps", "dir"}.
 */
import { type Gpu, requestGpu } from "../core/gpu.ts";
import { loadBrownTokens } from "../core/data/corpora.ts";
import type { StreamBatcherState } from "../core/data/batches.ts";
import { tokenizerFor } from "../core/data/tokenizer.ts";
import { evaluate } from "../core/evaluate.ts";
import { FullMethod } from "../core/finetune/full.ts";
import { type EvalRecord, msPerStep, type StepRecord, train } from "../core/finetune/trainer.ts";
import {
  checkOptimizerFits,
  findCheckpoint,
  loadTrainerState,
  saveCheckpoint,
} from "../core/io/checkpoint.ts";
import { CheckpointError } from "../core/io/hf.ts";
import { loadModel, saveModel } from "../core/io/models.ts";
import { writeFileAtomic } from "../core/io/safetensors.ts";
import { createModel } from "../core/nn/families.ts";
import type { LanguageModel } from "../core/nn/model.ts";
import { ensureWritableDir, flagChoice, FlagError, flagNumber, parseFlags, runCli } from "./flags.ts";
import { type Preset, PRESETS } from "./presets.ts";
import { pretrainSetup } from "./pretrain_setup.ts";
import { formatDuration, Progress } from "./progress.ts";
import { historyUpTo, StepLog } from "./step_log.ts";

/** Options of {@link pretrain}. */
export interface PretrainOptions {
  preset: Preset;
  /** Schedule length (total steps). */
  steps: number;
  /** Stop after this many steps (simulates an interruption; default: steps). */
  stopAfter?: number;
  /** Steps between checkpoints (default: a quarter of the run). */
  checkpointEvery?: number;
  out: string;
  seed: number;
  /** Continue from out/checkpoint. */
  resume: boolean;
  /** Print progress to stderr. */
  quiet?: boolean;
  /** Use this device instead of requesting one. */
  gpu?: Gpu;
}

/** What a pretraining run returns (also written to metrics.json). */
export interface PretrainResult {
  preset: string;
  seed: number;
  steps: StepRecord[];
  evals: EvalRecord[];
  valLoss: number;
  valTokens: number;
  tokensPerSec: number;
  adapter: string;
  dir: string;
}

/** Writes `tokens` as nanoGPT's .bin (little-endian uint16); throws if an id does not fit. */
export async function writeBin(path: string, tokens: Uint32Array): Promise<void> {
  const out = new Uint16Array(tokens.length);
  tokens.forEach((t, i) => {
    if (t > 65535) throw new Error(`writeBin: token ${t} does not fit uint16`);
    out[i] = t;
  });
  await writeFileAtomic(path, new Uint8Array(out.buffer));
}

/** Pretrains (or resumes) per `o`; returns the metrics it also writes. */
export async function pretrain(o: PretrainOptions): Promise<PretrainResult> {
  const p = o.preset;
  const log = (m: string) => o.quiet || console.error(m);
  await ensureWritableDir(o.out);
  const gpu = o.gpu ?? await requestGpu();
  log(`pretrain: preset ${p.name}, adapter ${gpu.info.description}, out ${o.out}`);
  const tokenizer = tokenizerFor(p.model.vocabSize);
  const tokens = await loadBrownTokens(tokenizer);
  const { trainTokens, valTokens, batcher, optimizer, schedule, evalBatches: allEval } = pretrainSetup(
    gpu,
    p,
    tokens,
    o.seed,
    o.steps,
  );
  log(
    `pretrain: Brown corpus, ${tokens.length} ${tokenizer.name} tokens (${trainTokens.length} train, ${valTokens.length} validation)`,
  );
  const ckptDir = `${o.out}/checkpoint`;
  let model: LanguageModel;
  let startStep = 0;
  let history: StepRecord[] = [];
  let evalHistory: EvalRecord[] = [];
  if (o.resume) {
    const dir = await findCheckpoint(ckptDir);
    if (!dir) throw new CheckpointError(`--resume: no checkpoint in ${ckptDir}`);
    const state = await loadTrainerState(dir, optimizer);
    const { preset, seed, history: h, evals } = state.extra as {
      preset?: string;
      seed?: number;
      history?: StepRecord[];
      evals?: EvalRecord[];
    };
    history = historyUpTo(`${dir}/trainer.json`, h, state.step);
    if (!Array.isArray(evals)) throw new CheckpointError(`${dir}/trainer.json: extra.evals is not a list`);
    if (state.step > o.steps) {
      throw new CheckpointError(`${dir}/trainer.json: step ${state.step} is beyond --steps ${o.steps}`);
    }
    if (preset !== p.name || seed !== o.seed) {
      throw new FlagError(
        `--resume: ${dir} is preset ${preset} seed ${seed}, not preset ${p.name} seed ${o.seed}`,
      );
    }
    model = (await loadModel(gpu, dir)).model;
    checkOptimizerFits(dir, optimizer, model.namedParameters());
    startStep = state.step;
    try {
      batcher.restore(state.batcher as StreamBatcherState);
    } catch (e) {
      throw new CheckpointError(`${dir}/trainer.json: ${(e as Error).message.split("\n")[0]}`);
    }
    evalHistory = evals;
    log(`pretrain: resumed from ${dir} after step ${startStep}`);
  } else {
    model = createModel(gpu, p.model, { seed: o.seed });
  }
  const method = new FullMethod(model);
  const progress = new Progress("pretrain", o.steps);
  const stop = Math.min(o.steps, o.stopAfter ?? o.steps);
  const tokensPerStep = p.batchSize * p.blockSize;
  const stepLog = await StepLog.open(`${o.out}/steps.jsonl`, history, (r) => r);
  const records = stepLog.records;
  const evalRecords = [...evalHistory];
  await train({
    model,
    method,
    optimizer,
    nextBatch: () => batcher.next(),
    schedule,
    steps: stop,
    startStep,
    maxGradNorm: 1,
    evalEvery: p.evalEvery,
    evalBatches: allEval.slice(0, p.evalBatches),
    evalAtStart: true,
    evalAtEnd: stop === o.steps,
    onStep: (r) => {
      stepLog.add(r);
      if (!o.quiet) progress.step(r, tokensPerStep);
    },
    afterStep: () => stepLog.flush(),
    onEval: (r) => {
      evalRecords.push(r);
      if (!o.quiet) progress.note(`pretrain: step ${r.step} validation loss ${r.loss.toFixed(4)}`);
    },
    checkpointEvery: o.checkpointEvery ?? Math.max(1, Math.round(o.steps / 4)),
    checkpoint: async (step) => {
      await saveCheckpoint(ckptDir, {
        weights: (dir) => saveModel(model, dir),
        optimizer,
        state: {
          step,
          batcher: batcher.state(),
          method: method.state(),
          extra: { history: records.slice(0, step), evals: evalRecords, preset: p.name, seed: o.seed },
        },
      });
      return ckptDir;
    },
  });
  const [steps, evals] = [records, evalRecords]; // history plus this run's onStep/onEval records
  log(`pretrain: final evaluation on ${allEval.length} validation batches`);
  const final = await evaluate(model, allEval);
  await saveModel(model, o.out);
  await writeBin(`${o.out}/val.bin`, valTokens);
  const ms = msPerStep(steps);
  const tokensPerSec = ms > 0 ? tokensPerStep / (ms / 1000) : 0;
  const metrics: PretrainResult = {
    preset: p.name,
    seed: o.seed,
    steps,
    evals,
    valLoss: final.loss,
    valTokens: final.tokens,
    tokensPerSec,
    adapter: gpu.info.description,
    dir: o.out,
  };
  await writeFileAtomic(
    `${o.out}/metrics.json`,
    JSON.stringify({ ...metrics, model: p.model }, null, 1) + "\n",
  );
  optimizer.dispose();
  model.dispose();
  return metrics;
}

/** The usage line printed after a bad command line. */
export const PRETRAIN_USAGE =
  `deno task pretrain [--preset ${
    Object.keys(PRESETS).join("|")
  }] [--steps N] [--out DIR] [--seed S] [--checkpoint-every N] ` +
  "[--stop-after N] [--resume] [--quiet]";

/** Parses pretrain's command line; throws a FlagError naming a bad flag. */
export function parsePretrainArgs(args: string[]): PretrainOptions {
  const values = parseFlags(args, {
    preset: { type: "string", default: "small" },
    steps: { type: "string" },
    "stop-after": { type: "string" },
    "checkpoint-every": { type: "string" },
    out: { type: "string" },
    seed: { type: "string", default: "0" },
    resume: { type: "boolean" },
    quiet: { type: "boolean" },
  });
  const p = PRESETS[flagChoice("preset", values.preset, Object.keys(PRESETS))];
  const int = (name: string, v: string | undefined) =>
    v === undefined ? undefined : flagNumber(name, v, "positive integer");
  return {
    preset: p,
    steps: int("steps", values.steps) ?? p.steps,
    stopAfter: int("stop-after", values["stop-after"]),
    checkpointEvery: int("checkpoint-every", values["checkpoint-every"]),
    out: values.out ?? `.cache/pretrain-${p.name}`,
    seed: flagNumber("seed", values.seed, "integer"),
    resume: values.resume,
    quiet: values.quiet,
  };
}

if (import.meta.main) {
  await runCli("pretrain", PRETRAIN_USAGE, async () => {
    const t0 = performance.now();
    const r = await pretrain(parsePretrainArgs(Deno.args));
    console.error(
      `pretrain: done in ${formatDuration((performance.now() - t0) / 1000)}, validation loss ${
        r.valLoss.toFixed(4)
      } over ${r.valTokens} tokens, ${Math.round(r.tokensPerSec)} tok/s`,
    );
    console.log(
      JSON.stringify({ valLoss: r.valLoss, tokens: r.valTokens, steps: r.steps.length, dir: r.dir }),
    );
  });
}
