/**
 * `deno task finetune --model DIR --data FILE --method full|lora|lisa --steps N --block-size T
 * --batch-size B --lr X --seed S --out DIR [method, schedule and evaluation flags]`: fine-tunes a
 * Hugging Face GPT-2 directory with one of the methods, behind one training loop. Writes to --out:
 * for full and lisa a Hugging Face directory (same key style as the input); for lora the PEFT
 * adapter files (and, with --merge, the merged model in out/merged); and metrics.json with every
 * step's loss, learning rate, active blocks and peak memory by category, and the run's peak.
 */
import { parseArgs } from "node:util";
import {
  type Batch,
  evalExampleBatches,
  evalWindows,
  ExampleBatcher,
  splitExamples,
  splitTrainVal,
  StreamBatcher,
} from "../core/data/batches.ts";
import { loadDataset, needsTokenizer } from "../core/data/formats.ts";
import { tokenizerFor } from "../core/data/tokenizer.ts";
import { evaluate } from "../core/evaluate.ts";
import { LisaMethod, type StatePolicy } from "../core/finetune/lisa.ts";
import { LoraMethod } from "../core/finetune/lora.ts";
import { FullMethod } from "../core/finetune/full.ts";
import type { FinetuneMethod } from "../core/finetune/method.ts";
import { type EvalRecord, msPerStep, type StepRecord, train } from "../core/finetune/trainer.ts";
import { type Gpu, requestGpu } from "../core/gpu.ts";
import { loadGPT2, saveGPT2 } from "../core/io/hf.ts";
import { writeFileAtomic } from "../core/io/safetensors.ts";
import type { CategoryBytes } from "../core/memory.ts";
import type { GPT } from "../core/nn/gpt.ts";
import { AdamW } from "../core/optim/adamw.ts";
import { makeSchedule } from "../core/optim/schedule.ts";
import { flagNumber } from "./flags.ts";
import { formatDuration, Progress } from "./progress.ts";

/** Everything a fine-tuning run needs. */
export interface FinetuneOptions {
  /** Hugging Face GPT-2 directory of the base model. */
  model: string;
  /** Training data (.txt, .jsonl, .bin). */
  data: string;
  method: "full" | "lora" | "lisa";
  steps: number;
  blockSize: number;
  batchSize: number;
  lr: number;
  seed: number;
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
  /** LISA: γ, K, state policy, per-block probabilities. */
  gamma?: number;
  period?: number;
  state?: StatePolicy;
  probabilities?: number[];
  /** LoRA: rank, alpha, dropout, targets, rsLoRA, merge into out/merged. */
  rank?: number;
  alpha?: number;
  dropout?: number;
  targets?: string[] | "all-linear";
  rslora?: boolean;
  merge?: boolean;
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

/** The method named in `o`, set up on `model`. */
export function makeMethod(model: GPT, o: FinetuneOptions): FinetuneMethod {
  if (o.method === "full") return new FullMethod(model);
  if (o.method === "lisa") {
    return new LisaMethod(model, {
      gamma: o.gamma ?? 2,
      period: o.period ?? 20,
      state: o.state,
      probabilities: o.probabilities,
      seed: o.seed + 2,
    });
  }
  if (o.method === "lora") {
    return new LoraMethod(model, {
      rank: o.rank ?? 8,
      alpha: o.alpha ?? 2 * (o.rank ?? 8),
      dropout: o.dropout ?? 0,
      targets: o.targets,
      rslora: o.rslora,
      seed: o.seed + 2,
    });
  }
  throw new Error(`--method ${o.method}: expected full, lora or lisa`);
}

/** Runs one fine-tuning per `o`; writes the outputs when `o.out` is set; returns the metrics. */
export async function finetune(o: FinetuneOptions): Promise<FinetuneMetrics> {
  const log = (m: string) => o.quiet || console.error(m);
  const gpu = o.gpu ?? await requestGpu();
  const { model, keyStyle } = await loadGPT2(gpu, o.model);
  try {
    if (o.blockSize > model.config.blockSize) {
      throw new Error(
        `--block-size ${o.blockSize} exceeds the model's n_positions ${model.config.blockSize}`,
      );
    }
    const v = model.config.vocabSize;
    const data = await loadDataset(o.data, needsTokenizer(o.data) ? tokenizerFor(v) : null, v);
    const valFraction = o.valFraction ?? 0;
    let nextBatch: () => Batch;
    let valBatches: Batch[] = [];
    if (data.kind === "stream") {
      const { train: tr, val } = valFraction > 0
        ? splitTrainVal(data.tokens, valFraction, o.seed)
        : { train: data.tokens, val: null };
      const batcher = new StreamBatcher(tr, o.batchSize, o.blockSize, o.seed + 1);
      nextBatch = () => batcher.next();
      if (val) valBatches = evalWindows(val, o.blockSize, o.batchSize);
    } else {
      const { train: tr, val } = valFraction > 0
        ? splitExamples(data.examples, valFraction, o.seed)
        : { train: data.examples, val: null };
      const batcher = new ExampleBatcher(tr, o.batchSize, o.blockSize, o.seed + 1);
      nextBatch = () => batcher.next();
      if (val) valBatches = evalExampleBatches(val, o.blockSize, o.batchSize);
    }
    const method = makeMethod(model, o);
    const optimizer = new AdamW(gpu, { weightDecay: o.weightDecay ?? 0 });
    const warmup = o.warmup ?? Math.min(100, Math.floor(o.steps / 10));
    const schedule = o.schedule === "constant"
      ? makeSchedule({ kind: "constant", lr: o.lr, warmup })
      : makeSchedule({ kind: "cosine", lr: o.lr, warmup, total: o.steps, minLr: o.minLr });
    log(
      `finetune: ${o.method} on ${o.data} (${data.kind}), ${o.steps} steps of ${o.batchSize}×${o.blockSize}, adapter ${gpu.info.description}`,
    );
    const progress = new Progress(`finetune ${o.method}`, o.steps);
    const tokensPerStep = o.batchSize * o.blockSize;
    const result = await train({
      model,
      method,
      optimizer,
      nextBatch,
      schedule,
      steps: o.steps,
      maxGradNorm: o.maxGradNorm === 0 ? undefined : (o.maxGradNorm ?? 1),
      evalEvery: valBatches.length ? o.evalEvery ?? o.steps : undefined,
      evalBatches: valBatches.length ? valBatches.slice(0, o.evalBatches ?? 8) : undefined,
      evalAtStart: valBatches.length > 0,
      onStep: (r: StepRecord) => o.quiet || progress.step(r, tokensPerStep),
      onEval: (r) =>
        o.quiet || progress.note(`finetune: step ${r.step} validation loss ${r.loss.toFixed(4)}`),
    });
    const finalValLoss = valBatches.length ? (await evaluate(model, valBatches)).loss : null;
    const ms = msPerStep(result.steps);
    const metrics: FinetuneMetrics = {
      method: o.method,
      config: configOf(o, method, warmup),
      steps: result.steps.map((r) => ({
        step: r.step,
        loss: r.loss,
        lr: r.lr,
        activeLayers: r.activeLayers,
        memory: r.memory,
        gradNorm: r.gradNorm,
        ms: r.ms,
      })),
      peak: { total: result.peakTotal, ...result.peak },
      evals: result.evals,
      finalValLoss,
      tokensPerSec: ms > 0 ? tokensPerStep / (ms / 1000) : 0,
      msPerStep: ms,
      compiles: { count: result.compiles, ms: result.compileMs },
      adapter: gpu.info.description,
      kernels: gpu.kernels,
    };
    if (o.out) await writeOutputs(o, model, method, keyStyle, metrics);
    optimizer.dispose();
    return metrics;
  } finally {
    model.dispose();
  }
}

function configOf(o: FinetuneOptions, method: FinetuneMethod, warmup: number): Record<string, unknown> {
  const c: Record<string, unknown> = {
    model: o.model,
    data: o.data,
    steps: o.steps,
    blockSize: o.blockSize,
    batchSize: o.batchSize,
    lr: o.lr,
    seed: o.seed,
    schedule: o.schedule ?? "cosine",
    warmup,
    maxGradNorm: o.maxGradNorm ?? 1,
    weightDecay: o.weightDecay ?? 0,
    valFraction: o.valFraction ?? 0,
  };
  if (method instanceof LisaMethod) {
    Object.assign(c, { gamma: method.gamma, period: method.period, state: method.policy });
  }
  if (method instanceof LoraMethod) Object.assign(c, method.config);
  return c;
}

async function writeOutputs(
  o: FinetuneOptions,
  model: GPT,
  method: FinetuneMethod,
  keyStyle: "bare" | "transformer",
  metrics: FinetuneMetrics,
): Promise<void> {
  const out = o.out!;
  await Deno.mkdir(out, { recursive: true });
  if (method instanceof LoraMethod) {
    await method.exportPeft(out, o.model);
    if (o.merge) {
      method.merge();
      await saveGPT2(model, `${out}/merged`, keyStyle);
    }
  } else {
    await saveGPT2(model, out, keyStyle);
  }
  const { evals, finalValLoss, tokensPerSec, msPerStep, compiles, adapter, kernels, ...required } = metrics;
  const rest = { evals, finalValLoss, tokensPerSec, msPerStep, compiles, adapter, kernels };
  await writeFileAtomic(`${out}/metrics.json`, JSON.stringify({ ...required, ...rest }, null, 1) + "\n");
}

/** Parses the CLI's flags into options; throws naming the flag on bad values. */
export function parseFinetuneArgs(args: string[]): FinetuneOptions {
  const { values } = parseArgs({
    args,
    options: {
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
      gamma: { type: "string" },
      period: { type: "string" },
      state: { type: "string" },
      probabilities: { type: "string" },
      rank: { type: "string" },
      alpha: { type: "string" },
      dropout: { type: "string" },
      targets: { type: "string" },
      rslora: { type: "boolean", default: false },
      merge: { type: "boolean", default: false },
      quiet: { type: "boolean", default: false },
    },
  });
  const need = (k: string) => {
    const v = (values as Record<string, unknown>)[k];
    if (v === undefined) throw new Error(`--${k} is required`);
    return v as string;
  };
  const num = (k: string, v: string | undefined, int = false): number | undefined =>
    v === undefined ? undefined : flagNumber(k, v, int ? "integer" : "number");
  const method = need("method");
  if (!["full", "lora", "lisa"].includes(method)) {
    throw new Error(`--method ${method}: expected full, lora or lisa`);
  }
  const schedule = values.schedule!;
  if (schedule !== "constant" && schedule !== "cosine") {
    throw new Error(`--schedule ${schedule}: expected constant or cosine`);
  }
  const state = values.state;
  if (state !== undefined && !["reset", "keep", "offload"].includes(state)) {
    throw new Error(`--state ${state}: expected reset, keep or offload`);
  }
  const targets = values.targets === undefined
    ? undefined
    : values.targets === "all-linear"
    ? "all-linear" as const
    : values.targets.split(",");
  return {
    model: need("model"),
    data: need("data"),
    method: method as FinetuneOptions["method"],
    steps: num("steps", need("steps"), true)!,
    blockSize: num("block-size", need("block-size"), true)!,
    batchSize: num("batch-size", values["batch-size"], true)!,
    lr: num("lr", need("lr"))!,
    seed: num("seed", values.seed, true)!,
    out: values.out,
    schedule,
    warmup: num("warmup", values.warmup, true),
    minLr: num("min-lr", values["min-lr"]),
    maxGradNorm: num("max-grad-norm", values["max-grad-norm"]),
    weightDecay: num("weight-decay", values["weight-decay"]),
    valFraction: num("val-fraction", values["val-fraction"]),
    evalEvery: num("eval-every", values["eval-every"], true),
    gamma: num("gamma", values.gamma, true),
    period: num("period", values.period, true),
    state: state as StatePolicy | undefined,
    probabilities: values.probabilities?.split(",").map((p) => num("probabilities", p)!),
    rank: num("rank", values.rank, true),
    alpha: num("alpha", values.alpha),
    dropout: num("dropout", values.dropout),
    targets,
    rslora: values.rslora,
    merge: values.merge,
    quiet: values.quiet,
  };
}

if (import.meta.main) {
  const t0 = performance.now();
  try {
    const o = parseFinetuneArgs(Deno.args);
    if (!o.out) throw new Error("--out is required");
    const m = await finetune(o);
    const last = m.steps.at(-1);
    console.error(
      `finetune: done in ${formatDuration((performance.now() - t0) / 1000)}; last loss ${
        last?.loss.toFixed(4)
      }, ` +
        `peak ${(m.peak.total / 2 ** 20).toFixed(1)} MiB, ${Math.round(m.tokensPerSec)} tok/s`,
    );
    console.log(
      JSON.stringify({
        method: m.method,
        loss: last?.loss ?? null,
        finalValLoss: m.finalValLoss,
        peak: m.peak.total,
        out: o.out,
      }),
    );
  } catch (e) {
    console.error(`finetune: ${(e as Error).message}`);
    console.error(
      "usage: deno task finetune --model DIR --data FILE --method full|lora|lisa --steps N --block-size T --lr X --out DIR [--batch-size B] [--seed S] ...",
    );
    Deno.exit(1);
  }
}
