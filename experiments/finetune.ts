/**
 * `deno task finetune --model DIR --data FILE --method full|lora|lisa --steps N --block-size T
 * --lr X --out DIR [--checkpoint-every N] [--stop-after N] [--resume] [method, schedule and
 * evaluation flags]`: fine-tunes a Hugging Face model directory (GPT-2, LLaMA or Mistral) with one
 * of the methods, behind one training loop. Text data is encoded with the model's tokenizer.json when
 * it has one. Writes to --out: for full and lisa a Hugging Face directory in the input's layout (key
 * style, config.json, sharding; its tokenizer files copied); for lora the PEFT adapter files (and, with --merge, the merged model in out/merged);
 * steps.jsonl, one line per step, appended as steps are read back; metrics.json with every step's
 * loss, learning rate, active blocks and peak memory by category, and the run's peak; and, with
 * --checkpoint-every or --stop-after, a resumable checkpoint/ that --resume continues exactly.
 */
import {
  type Batch,
  evalExampleBatches,
  evalWindows,
  ExampleBatcher,
  type ExampleBatcherState,
  splitExamples,
  splitTrainVal,
  StreamBatcher,
  type StreamBatcherState,
} from "../core/data/batches.ts";
import { loadDataset, needsTokenizer } from "../core/data/formats.ts";
import { evaluate } from "../core/evaluate.ts";
import { LisaMethod, type StatePolicy } from "../core/finetune/lisa.ts";
import { LoraMethod } from "../core/finetune/lora.ts";
import type { FinetuneMethod } from "../core/finetune/method.ts";
import { makeMethod, type MethodName, METHODS, type MethodSettings } from "../core/finetune/methods.ts";
import { type EvalRecord, msPerStep, type StepRecord, train } from "../core/finetune/trainer.ts";
import { type Gpu, requestGpu } from "../core/gpu.ts";
import {
  checkOptimizerFits,
  findCheckpoint,
  loadTrainerState,
  saveCheckpoint,
} from "../core/io/checkpoint.ts";
import { CheckpointError } from "../core/io/hf.ts";
import { copySideFiles, loadModel, type ModelSource, modelTokenizer, saveModel } from "../core/io/models.ts";
import { writeFileAtomic } from "../core/io/safetensors.ts";
import type { CategoryBytes } from "../core/memory.ts";
import { positionsKey } from "../core/nn/families.ts";
import type { LanguageModel } from "../core/nn/model.ts";
import { AdamW } from "../core/optim/adamw.ts";
import { makeSchedule } from "../core/optim/schedule.ts";
import {
  ensureWritableDir,
  flagChoice,
  FlagError,
  flagNumber,
  parseFlags,
  required,
  runCli,
} from "./flags.ts";
import { formatDuration, Progress } from "./progress.ts";
import { historyUpTo, StepLog } from "./step_log.ts";

/** Everything a fine-tuning run needs. */
export interface FinetuneOptions extends MethodSettings {
  /** Hugging Face directory of the base model (model_type gpt2, llama or mistral). */
  model: string;
  /** Training data (.txt, .jsonl, .bin). */
  data: string;
  steps: number;
  blockSize: number;
  batchSize: number;
  lr: number;
  /** Output directory (nothing is written when absent: library use). */
  out?: string;
  /** LR schedule (default cosine with warmup, to lr/10). */
  schedule?: "constant" | "cosine";
  warmup?: number;
  minLr?: number;
  /** Global gradient-norm clip (default 1; 0 disables). */
  maxGradNorm?: number;
  /** AdamW decoupled weight decay on ≥ 2-D weights (default 0). */
  weightDecay?: number;
  /** Fraction of the data held out for validation (default 0: none). */
  valFraction?: number;
  /** Evaluate on the held-out data every N steps (and at the end). */
  evalEvery?: number;
  /** Validation batches used by periodic evaluations (default 8; the final one uses all). */
  evalBatches?: number;
  /** LoRA: also write the merged model to out/merged. */
  merge?: boolean;
  /** Save a checkpoint to out/checkpoint every N steps (and when stopping). */
  checkpointEvery?: number;
  /** Stop after this many steps (with a checkpoint), as if interrupted; --resume continues. */
  stopAfter?: number;
  /** Continue from out/checkpoint (the same settings are required). */
  resume?: boolean;
  /** Print progress to stderr. */
  quiet?: boolean;
  /** Use this device instead of requesting one. */
  gpu?: Gpu;
}

/** metrics.json: what a run measured, in the documented format. */
export interface FinetuneMetrics {
  method: string;
  config: Record<string, unknown>;
  steps: {
    step: number;
    loss: number;
    lr: number;
    activeLayers: number[];
    memory: CategoryBytes;
    gradNorm?: number;
    ms: number;
  }[];
  peak: CategoryBytes & { total: number };
  evals: EvalRecord[];
  /** Mean loss over all held-out data after training (null without validation data). */
  finalValLoss: number | null;
  tokensPerSec: number;
  /** Mean ms per step (core/finetune/trainer.ts's msPerStep: compiles excluded). */
  msPerStep: number;
  /** Kernels compiled during the run and their host time (not part of msPerStep). */
  compiles: { count: number; ms: number };
  adapter: string;
  /** Kernel family the device ran (gpu or software). */
  kernels: string;
}

/** What checkpoint/trainer.json keeps beside the trainer's own state. */
interface FinetuneExtra {
  /** The settings the run was started with ({@link configOf}); a resume must use the same. */
  config: Record<string, unknown>;
  /** Step records so far. */
  history: StepRecord[];
  /** Evaluations so far. */
  evals: EvalRecord[];
}

/** The metrics.json form of a step record. */
function stepEntry(r: StepRecord): FinetuneMetrics["steps"][number] {
  return {
    step: r.step,
    loss: r.loss,
    lr: r.lr,
    activeLayers: r.activeLayers,
    memory: r.memory,
    gradNorm: r.gradNorm,
    ms: r.ms,
  };
}

/** Runs one fine-tuning per `o`; writes the outputs when `o.out` is set; returns the metrics. */
export async function finetune(o: FinetuneOptions): Promise<FinetuneMetrics> {
  checkOptions(o);
  if (o.out) await ensureWritableDir(o.out);
  const gpu = o.gpu ?? await requestGpu();
  const optimizer = new AdamW(gpu, { weightDecay: o.weightDecay ?? 0 });
  let model: LanguageModel | undefined;
  try {
    return await finetuneWith(o, gpu, optimizer, (m) => (model = m));
  } finally {
    optimizer.dispose();
    model?.dispose();
  }
}

async function finetuneWith(
  o: FinetuneOptions,
  gpu: Gpu,
  optimizer: AdamW,
  own: (model: LanguageModel) => void,
): Promise<FinetuneMetrics> {
  const log = (m: string) => o.quiet || console.error(m);
  const ckptDir = o.out ? `${o.out}/checkpoint` : null;
  const warmup = o.warmup ?? Math.min(100, Math.floor(o.steps / 10));
  let resumeFrom: string | null = null;
  let resumed: { step: number; batcher: unknown; method: unknown; extra: FinetuneExtra } | null = null;
  if (o.resume) {
    if (!ckptDir) throw new FlagError("--resume needs --out (the checkpoint is out/checkpoint)");
    resumeFrom = await findCheckpoint(ckptDir);
    if (!resumeFrom) throw new CheckpointError(`--resume: no checkpoint in ${ckptDir}`);
    const state = await loadTrainerState(resumeFrom, optimizer);
    const extra = state.extra as unknown as FinetuneExtra;
    if (!extra.config || !Array.isArray(extra.history) || !Array.isArray(extra.evals)) {
      throw new CheckpointError(`${resumeFrom}/trainer.json: not a finetune checkpoint`);
    }
    const now = configOf(o, warmup);
    const differ = Object.keys({ ...now, ...extra.config }).filter((k) =>
      JSON.stringify(now[k]) !== JSON.stringify(extra.config[k])
    );
    if (differ.length) {
      const k = differ[0];
      throw new FlagError(
        `--resume: the checkpoint in ${resumeFrom} was made with ${k} = ${
          JSON.stringify(extra.config[k])
        }, not ${JSON.stringify(now[k])}${
          differ.length > 1 ? ` (also differ: ${differ.slice(1).join(", ")})` : ""
        }; resume with the same settings`,
      );
    }
    extra.history = historyUpTo(`${resumeFrom}/trainer.json`, extra.history, state.step);
    if (state.step > o.steps) {
      throw new CheckpointError(
        `${resumeFrom}/trainer.json: step ${state.step} is beyond --steps ${o.steps}`,
      );
    }
    resumed = { step: state.step, batcher: state.batcher, method: state.method, extra };
  }
  // Full and LISA change the base weights: a resume starts from the checkpoint's. LoRA's base stays.
  const weightsFrom = resumeFrom && o.method !== "lora" ? resumeFrom : o.model;
  const { model, source } = await loadModel(gpu, weightsFrom);
  own(model);
  if (o.blockSize > model.config.blockSize) {
    throw new FlagError(
      `--block-size ${o.blockSize} exceeds the model's ${positionsKey(model)} ${model.config.blockSize}`,
    );
  }
  const v = model.config.vocabSize;
  const data = await loadDataset(o.data, needsTokenizer(o.data) ? await modelTokenizer(o.model, v) : null, v);
  const valFraction = o.valFraction ?? 0;
  let batcher: StreamBatcher | ExampleBatcher;
  let valBatches: Batch[] = [];
  if (data.kind === "stream") {
    const { train: tr, val } = valFraction > 0
      ? splitTrainVal(data.tokens, valFraction, o.seed)
      : { train: data.tokens, val: null };
    batcher = new StreamBatcher(tr, o.batchSize, o.blockSize, o.seed + 1);
    if (val) valBatches = evalWindows(val, o.blockSize, o.batchSize);
  } else {
    const { train: tr, val } = valFraction > 0
      ? splitExamples(data.examples, valFraction, o.seed)
      : { train: data.examples, val: null };
    batcher = new ExampleBatcher(tr, o.batchSize, o.blockSize, o.seed + 1);
    if (val) valBatches = evalExampleBatches(val, o.blockSize, o.batchSize);
  }
  const method = makeMethod(model, o);
  const startStep = resumed?.step ?? 0;
  const history: StepRecord[] = resumed ? resumed.extra.history : [];
  const evalRecords: EvalRecord[] = resumed ? [...resumed.extra.evals] : [];
  if (resumed) {
    try {
      if (batcher instanceof StreamBatcher) batcher.restore(resumed.batcher as StreamBatcherState);
      else batcher.restore(resumed.batcher as ExampleBatcherState);
      method.restore(resumed.method);
    } catch (e) {
      throw new CheckpointError(`${resumeFrom}/trainer.json: ${(e as Error).message.split("\n")[0]}`);
    }
    if (method instanceof LoraMethod) await method.importPeft(resumeFrom!);
    checkOptimizerFits(resumeFrom!, optimizer, model.namedParameters());
    log(`finetune: resumed from ${resumeFrom} after step ${startStep}`);
  }
  const schedule = o.schedule === "constant"
    ? makeSchedule({ kind: "constant", lr: o.lr, warmup })
    : makeSchedule({ kind: "cosine", lr: o.lr, warmup, total: o.steps, minLr: o.minLr });
  log(
    `finetune: ${o.method} on ${o.data} (${data.kind}), ${o.steps} steps of ${o.batchSize}×${o.blockSize}, adapter ${gpu.info.description}`,
  );
  const progress = new Progress(`finetune ${o.method}`, o.steps, startStep);
  const tokensPerStep = o.batchSize * o.blockSize;
  const stop = Math.min(o.steps, o.stopAfter ?? o.steps);
  const checkpointing = !!ckptDir && (o.checkpointEvery !== undefined || stop < o.steps);
  const steps = await StepLog.open(o.out ? `${o.out}/steps.jsonl` : null, history, stepEntry);
  const records = steps.records;
  const result = await train({
    model,
    method,
    optimizer,
    nextBatch: () => batcher.next(),
    schedule,
    steps: stop,
    startStep,
    maxGradNorm: o.maxGradNorm === 0 ? undefined : (o.maxGradNorm ?? 1),
    evalEvery: valBatches.length ? o.evalEvery ?? o.steps : undefined,
    evalBatches: valBatches.length ? valBatches.slice(0, o.evalBatches ?? 8) : undefined,
    evalAtStart: valBatches.length > 0,
    evalAtEnd: stop === o.steps,
    onStep: (r: StepRecord) => {
      steps.add(r);
      if (!o.quiet) progress.step(r, tokensPerStep);
    },
    afterStep: () => steps.flush(),
    onEval: (r) => {
      evalRecords.push(r);
      if (!o.quiet) progress.note(`finetune: step ${r.step} validation loss ${r.loss.toFixed(4)}`);
    },
    checkpointEvery: checkpointing ? o.checkpointEvery ?? stop : undefined,
    checkpoint: checkpointing
      ? async (step) => {
        const extra: FinetuneExtra = { config: configOf(o, warmup), history: records, evals: evalRecords };
        await saveCheckpoint(ckptDir!, {
          weights: (dir) =>
            method instanceof LoraMethod
              ? method.exportPeft(dir, o.model)
              : saveModel(model, dir, { source }),
          optimizer,
          state: {
            step,
            batcher: batcher.state(),
            method: method.state(),
            extra: extra as unknown as Record<string, unknown>,
          },
        });
        return ckptDir!;
      }
      : undefined,
  });
  const finished = stop === o.steps;
  const finalValLoss = finished && valBatches.length ? (await evaluate(model, valBatches)).loss : null;
  const ms = msPerStep(records);
  const peak = { total: result.peakTotal, ...result.peak };
  for (const r of history) {
    peak.total = Math.max(peak.total, r.peakTotal);
    for (const c of Object.keys(r.memory) as (keyof CategoryBytes)[]) {
      peak[c] = Math.max(peak[c], r.memory[c]);
    }
  }
  const metrics: FinetuneMetrics = {
    method: o.method,
    config: configOf(o, warmup, method),
    steps: records.map(stepEntry),
    peak,
    evals: evalRecords,
    finalValLoss,
    tokensPerSec: ms > 0 ? tokensPerStep / (ms / 1000) : 0,
    msPerStep: ms,
    compiles: { count: result.compiles, ms: result.compileMs },
    adapter: gpu.info.description,
    kernels: gpu.kernels,
  };
  if (!finished) {
    log(
      `finetune: stopped after step ${stop} of ${o.steps}; continue with --resume (checkpoint ${ckptDir})`,
    );
  } else if (o.out) await writeOutputs(o, model, method, source, metrics);
  return metrics;
}

/** Rejects settings no run can use, naming the flag (the CLI's parser checks types; this, ranges). */
function checkOptions(o: FinetuneOptions): void {
  if (!(METHODS as readonly string[]).includes(o.method)) {
    throw new FlagError(`--method ${o.method}: expected ${METHODS.join(", ")}`);
  }
  const positive: [string, number | undefined][] = [
    ["steps", o.steps],
    ["block-size", o.blockSize],
    ["batch-size", o.batchSize],
    ["checkpoint-every", o.checkpointEvery],
    ["stop-after", o.stopAfter],
    ["eval-every", o.evalEvery],
  ];
  for (const [k, v] of positive) {
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= 1)) {
      throw new FlagError(`--${k} ${v}: expected a positive integer`);
    }
  }
  if (!(o.lr > 0 && Number.isFinite(o.lr))) throw new FlagError(`--lr ${o.lr}: expected a positive number`);
  if (o.valFraction !== undefined && !(o.valFraction >= 0 && o.valFraction < 1)) {
    throw new FlagError(`--val-fraction ${o.valFraction}: expected a number in [0, 1)`);
  }
  if (o.dropout !== undefined && !(o.dropout >= 0 && o.dropout < 1)) {
    throw new FlagError(`--dropout ${o.dropout}: expected a number in [0, 1)`);
  }
  if ((o.checkpointEvery !== undefined || o.stopAfter !== undefined) && !o.out) {
    throw new FlagError("--checkpoint-every and --stop-after need --out (the checkpoint is out/checkpoint)");
  }
}

/** The settings that shape a run's numbers (a resume must repeat them exactly). */
function configOf(o: FinetuneOptions, warmup: number, method?: FinetuneMethod): Record<string, unknown> {
  const c: Record<string, unknown> = {
    model: o.model,
    data: o.data,
    method: o.method,
    steps: o.steps,
    blockSize: o.blockSize,
    batchSize: o.batchSize,
    lr: o.lr,
    seed: o.seed,
    schedule: o.schedule ?? "cosine",
    warmup,
    minLr: o.minLr ?? null,
    maxGradNorm: o.maxGradNorm ?? 1,
    weightDecay: o.weightDecay ?? 0,
    valFraction: o.valFraction ?? 0,
  };
  if (o.method === "lisa") {
    Object.assign(c, {
      gamma: o.gamma ?? 2,
      period: o.period ?? 20,
      state: o.state ?? "reset",
      probabilities: o.probabilities ?? null,
    });
  }
  if (o.method === "lora") {
    Object.assign(c, {
      rank: o.rank ?? 8,
      alpha: o.alpha ?? 2 * (o.rank ?? 8),
      dropout: o.dropout ?? 0,
      targets: o.targets ?? null,
      rslora: o.rslora ?? false,
    });
  }
  if (method instanceof LisaMethod) {
    Object.assign(c, { gamma: method.gamma, period: method.period, state: method.policy });
  }
  if (method instanceof LoraMethod) Object.assign(c, method.config);
  return c;
}

async function writeOutputs(
  o: FinetuneOptions,
  model: LanguageModel,
  method: FinetuneMethod,
  source: ModelSource,
  metrics: FinetuneMetrics,
): Promise<void> {
  const out = o.out!;
  if (method instanceof LoraMethod) {
    await method.exportPeft(out, o.model);
    if (o.merge) {
      method.merge();
      await saveModel(model, `${out}/merged`, { source });
      await copySideFiles(o.model, `${out}/merged`);
    }
  } else {
    await saveModel(model, out, { source });
    await copySideFiles(o.model, out);
  }
  const { evals, finalValLoss, tokensPerSec, msPerStep, compiles, adapter, kernels, ...required } = metrics;
  const rest = { evals, finalValLoss, tokensPerSec, msPerStep, compiles, adapter, kernels };
  await writeFileAtomic(`${out}/metrics.json`, JSON.stringify({ ...required, ...rest }, null, 1) + "\n");
}

/** The command line's flags. */
const FLAGS = {
  model: { type: "string" },
  data: { type: "string" },
  method: { type: "string" },
  steps: { type: "string" },
  "block-size": { type: "string" },
  "batch-size": { type: "string", default: "8" },
  lr: { type: "string" },
  seed: { type: "string", default: "0" },
  out: { type: "string" },
  schedule: { type: "string", default: "cosine" },
  warmup: { type: "string" },
  "min-lr": { type: "string" },
  "max-grad-norm": { type: "string" },
  "weight-decay": { type: "string" },
  "val-fraction": { type: "string" },
  "eval-every": { type: "string" },
  "eval-batches": { type: "string" },
  gamma: { type: "string" },
  period: { type: "string" },
  state: { type: "string" },
  probabilities: { type: "string" },
  rank: { type: "string" },
  alpha: { type: "string" },
  dropout: { type: "string" },
  targets: { type: "string" },
  rslora: { type: "boolean" },
  merge: { type: "boolean" },
  "checkpoint-every": { type: "string" },
  "stop-after": { type: "string" },
  resume: { type: "boolean" },
  quiet: { type: "boolean" },
} as const;

/** The usage line printed after a bad command line. */
export const FINETUNE_USAGE =
  "deno task finetune --model DIR --data FILE --method full|lora|lisa --steps N --block-size T --lr X --out DIR " +
  "[--batch-size B] [--seed S] [--checkpoint-every N] [--stop-after N] [--resume] ...";

/** Parses the CLI's flags into options; throws a {@link FlagError} naming the flag on bad values. */
export function parseFinetuneArgs(args: string[]): FinetuneOptions {
  const values = parseFlags(args, FLAGS);
  const num = (k: keyof typeof FLAGS, kind: "number" | "integer" | "positive integer" = "number") => {
    const v = values[k] as string | undefined;
    return v === undefined ? undefined : flagNumber(k, v, kind);
  };
  const targets = values.targets === undefined
    ? undefined
    : values.targets === "all-linear"
    ? "all-linear" as const
    : values.targets.split(",");
  return {
    model: required("model", values.model),
    data: required("data", values.data),
    method: flagChoice("method", required("method", values.method), METHODS) as MethodName,
    steps: flagNumber("steps", required("steps", values.steps), "positive integer"),
    blockSize: flagNumber("block-size", required("block-size", values["block-size"]), "positive integer"),
    batchSize: num("batch-size", "positive integer")!,
    lr: flagNumber("lr", required("lr", values.lr)),
    seed: num("seed", "integer")!,
    out: values.out,
    schedule: flagChoice("schedule", values.schedule, ["constant", "cosine"] as const),
    warmup: num("warmup", "integer"),
    minLr: num("min-lr"),
    maxGradNorm: num("max-grad-norm"),
    weightDecay: num("weight-decay"),
    valFraction: num("val-fraction"),
    evalEvery: num("eval-every", "positive integer"),
    evalBatches: num("eval-batches", "positive integer"),
    gamma: num("gamma", "positive integer"),
    period: num("period", "positive integer"),
    state: values.state === undefined
      ? undefined
      : flagChoice<StatePolicy>("state", values.state, ["reset", "keep", "offload"]),
    probabilities: values.probabilities?.split(",").map((p) => flagNumber("probabilities", p)),
    rank: num("rank", "positive integer"),
    alpha: num("alpha"),
    dropout: num("dropout"),
    targets,
    rslora: values.rslora,
    merge: values.merge,
    checkpointEvery: num("checkpoint-every", "positive integer"),
    stopAfter: num("stop-after", "positive integer"),
    resume: values.resume,
    quiet: values.quiet,
  };
}

if (import.meta.main) {
  const t0 = performance.now();
  await runCli("finetune", FINETUNE_USAGE, async () => {
    const o = parseFinetuneArgs(Deno.args);
    if (!o.out) throw new FlagError("--out is required");
    const m = await finetune(o);
    const last = m.steps.at(-1);
    const stopped = m.steps.length < o.steps;
    console.error(
      `finetune: ${stopped ? "stopped" : "done"} in ${
        formatDuration((performance.now() - t0) / 1000)
      }; last loss ${last?.loss.toFixed(4)}, peak ${(m.peak.total / 2 ** 20).toFixed(1)} MiB, ${
        Math.round(m.tokensPerSec)
      } tok/s`,
    );
    console.log(
      JSON.stringify({
        method: m.method,
        steps: m.steps.length,
        loss: last?.loss ?? null,
        finalValLoss: m.finalValLoss,
        peak: m.peak.total,
        out: o.out,
        ...(stopped ? { checkpoint: `${o.out}/checkpoint` } : {}),
      }),
    );
  });
}
