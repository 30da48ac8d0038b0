/**
 * The training loop, the same for every method: per step, the method picks the trainable set, the
 * model's loss is recorded with its backward, AdamW updates what has gradients, gradients are
 * released, and the step is submitted once. Losses stay on the GPU and are read back once every
 * `readEvery` steps, so no step waits for the GPU. A NaN or infinite loss stops the run at that
 * read, naming the step and the last checkpoint; any other error that stops the run (a lost
 * device, memory, a rejected kernel) has the step and the last checkpoint added to its message.
 */
import { backward } from "../autograd.ts";
import type { Batch } from "../data/batches.ts";
import { evaluate } from "../evaluate.ts";
import type { CategoryBytes } from "../memory.ts";
import type { LanguageModel } from "../nn/model.ts";
import type { AdamW } from "../optim/adamw.ts";
import type { Schedule } from "../optim/schedule.ts";
import { empty, tidy, withCategory } from "../tensor.ts";
import type { FinetuneMethod } from "./method.ts";

/** One step's measurements. */
export interface StepRecord {
  /** Step index (0-based). */
  step: number;
  /** Training loss of the step's batch (before the update). */
  loss: number;
  /** Learning rate used. */
  lr: number;
  /** Global gradient norm before clipping (when clipping). */
  gradNorm?: number;
  /** Blocks trained this step. */
  activeLayers: number[];
  /** Peak live bytes per category during the step (framework accounting). */
  memory: CategoryBytes;
  /** Peak live bytes of all categories together during the step. */
  peakTotal: number;
  /**
   * Wall-clock milliseconds per step, averaged over the step's read window (losses are read once
   * per window); pipeline compiles, evaluations, checkpoints and `afterStep` are not counted.
   */
  ms: number;
}

/** A periodic evaluation. */
export interface EvalRecord {
  /** Steps completed when it ran. */
  step: number;
  /** Mean validation loss. */
  loss: number;
}

/** Raised when the loss stops being finite. */
export class TrainingDivergedError extends Error {}

/** Everything the loop needs. */
export interface TrainSetup {
  /** The model trained. */
  model: LanguageModel;
  /** Which parameters train at each step. */
  method: FinetuneMethod;
  /** Updates the trainable parameters. */
  optimizer: AdamW;
  /** Supplies training batches (seeded, resumable). */
  nextBatch: () => Batch;
  /** Learning rate by step. */
  schedule: Schedule;
  /** Step to stop before (total steps). */
  steps: number;
  /** Step to start at (after a resume). */
  startStep?: number;
  /** Clip gradients to this global norm. */
  maxGradNorm?: number;
  /** Evaluate every N steps (and after the last) on these batches. */
  evalEvery?: number;
  /** Validation batches for the periodic evaluation. */
  evalBatches?: Batch[];
  /**
   * Evaluate after the last step too (default true); false when the run stops early to be resumed,
   * so its evaluations stay those of the uninterrupted run.
   */
  evalAtEnd?: boolean;
  /** Also evaluate before the first step (when starting at step 0). */
  evalAtStart?: boolean;
  /**
   * Steps between loss readbacks (default {@link DEFAULT_READ_EVERY}); losses are also read before
   * every evaluation and checkpoint and at the end. A non-finite loss is seen at the next read.
   */
  readEvery?: number;
  /** Called for each step once its loss is read (progress bars, logs). */
  onStep?: (r: StepRecord) => void;
  /**
   * Awaited after each read window with its last step's record, outside every step's memory window
   * and time (for measurements such as weight norms, which then see that step's weights).
   */
  afterStep?: (r: StepRecord) => Promise<void>;
  /** Called after each evaluation. */
  onEval?: (r: EvalRecord) => void;
  /** Saves a checkpoint after `step` steps; called every `checkpointEvery` steps and at the end. */
  checkpoint?: (step: number) => Promise<string>;
  /** Steps between checkpoints. */
  checkpointEvery?: number;
}

/** What a run produced. */
export interface TrainResult {
  /** One record per step run. */
  steps: StepRecord[];
  /** Evaluations run. */
  evals: EvalRecord[];
  /** Peak live bytes per category over the run. */
  peak: CategoryBytes;
  /** Peak live bytes of all categories together over the run. */
  peakTotal: number;
  /** Kernels compiled during the run (each size of a kernel compiles once per device). */
  compiles: number;
  /** Host milliseconds spent compiling them (excluded from every step's `ms`). */
  compileMs: number;
}

/** Steps between loss readbacks when {@link TrainSetup.readEvery} is not given. */
export const DEFAULT_READ_EVERY = 10;

/**
 * The framework's one definition of ms/step: the mean of the steps' `ms` (wall-clock per step over
 * each read window, pipeline compiles, evaluations, checkpoints and `afterStep` excluded); 0 for none.
 */
export function msPerStep(steps: readonly StepRecord[]): number {
  return steps.length ? steps.reduce((s, r) => s + r.ms, 0) / steps.length : 0;
}

/** Runs steps [startStep, steps) and returns their records. */
export async function train(s: TrainSetup): Promise<TrainResult> {
  const gpu = s.model.gpu;
  const readEvery = s.readEvery ?? DEFAULT_READ_EVERY;
  if (!Number.isInteger(readEvery) || readEvery < 1) {
    throw new Error(`train: readEvery must be a whole number ≥ 1, got ${readEvery}`);
  }
  const records: StepRecord[] = [];
  const evals: EvalRecord[] = [];
  let lastCheckpoint = "none yet";
  await gpu.submit();
  const compiles0 = { count: gpu.pipelines.size, ms: gpu.pipelines.compileMs };
  // Each step's loss (and gradient norm) is copied into a slot of this log on the GPU; the log is
  // read once per window, so a step waits for nothing (every wait costs ≥ 10 ms in Deno).
  const log = withCategory("workspace", () => empty(gpu, [2, readEvery], { name: "loss_log" }));
  const before = gpu.memory.stats();
  const runPeak = { ...before.live };
  let runPeakTotal = before.liveTotal;
  const runEval = async (step: number, batches: Batch[]) => {
    const r = { step, loss: (await evaluate(s.model, batches)).loss };
    evals.push(r);
    s.onEval?.(r);
  };
  if (s.evalAtStart && s.evalBatches && !s.startStep) await runEval(0, s.evalBatches);
  let window: StepRecord[] = [];
  let windowStart = performance.now();
  let windowCompileMs = gpu.pipelines.compileMs;
  /** Reads the window's losses, times its steps, and hands them out; throws on a non-finite loss. */
  const flush = async () => {
    if (window.length === 0) return;
    const steps = window;
    window = [];
    const values = await log.download();
    const compileMs = gpu.pipelines.compileMs - windowCompileMs;
    const ms = (performance.now() - windowStart - compileMs) / steps.length;
    steps.forEach((r, i) => {
      r.loss = values[i];
      if (r.gradNorm !== undefined) r.gradNorm = values[readEvery + i];
      r.ms = ms;
    });
    for (const r of steps) {
      if (!Number.isFinite(r.loss)) {
        throw new TrainingDivergedError(
          `training diverged: loss is ${r.loss} at step ${r.step}; last checkpoint: ${lastCheckpoint}`,
        );
      }
      records.push(r);
      s.onStep?.(r);
    }
    if (s.afterStep) await s.afterStep(steps[steps.length - 1]);
    windowStart = performance.now();
    windowCompileMs = gpu.pipelines.compileMs;
  };
  let step = s.startStep ?? 0;
  try {
    for (; step < s.steps; step++) {
      const batch = s.nextBatch();
      await s.method.beginStep(step, s.optimizer);
      gpu.memory.resetPeak();
      const lr = s.schedule(step);
      const loss = tidy(() => s.model.loss(batch));
      backward(loss);
      const params = s.method.trainable();
      const result = s.optimizer.step(params, lr, s.maxGradNorm);
      for (const [, p] of params) p.zeroGrad();
      const slot = window.length;
      gpu.copy(loss.buffer, loss.byteOffset, log.buffer, log.byteOffset + slot * 4, 4);
      if (result) {
        const at = log.byteOffset + (readEvery + slot) * 4;
        gpu.copy(result.gradNorm.buffer, result.gradNorm.byteOffset, log.buffer, at, 4);
      }
      loss.dispose();
      result?.gradNorm.dispose();
      const stats = gpu.memory.stats();
      await gpu.submit();
      window.push({
        step,
        loss: NaN,
        lr,
        gradNorm: result ? NaN : undefined,
        activeLayers: s.method.activeLayers(),
        memory: stats.peak,
        peakTotal: stats.peakTotal,
        ms: 0,
      });
      for (const [c, v] of Object.entries(stats.peak) as [keyof CategoryBytes, number][]) {
        runPeak[c] = Math.max(runPeak[c], v);
      }
      runPeakTotal = Math.max(runPeakTotal, stats.peakTotal);
      const done = step + 1;
      const last = done === s.steps;
      const evalNow = !!(s.evalBatches && s.evalEvery &&
        (done % s.evalEvery === 0 || (last && (s.evalAtEnd ?? true))));
      const checkpointNow =
        !!(s.checkpoint && ((s.checkpointEvery && done % s.checkpointEvery === 0) || last));
      if (window.length === readEvery || last || evalNow || checkpointNow) await flush();
      if (evalNow) await runEval(done, s.evalBatches!);
      if (checkpointNow) lastCheckpoint = `${await s.checkpoint!(done)} (after step ${done})`;
      if (evalNow || checkpointNow) windowStart = performance.now();
    }
    await flush();
  } catch (thrown) {
    const e = await gpu.explain(thrown);
    // Whatever stopped the run (a lost device, memory, a kernel the device rejected), say where to resume.
    if (e instanceof Error && !(e instanceof TrainingDivergedError)) {
      const message = `${e.message.split("\n")[0]} (during step ${step}; last checkpoint: ${lastCheckpoint})`;
      // An own property, so error classes whose message is a getter keep their type and fields.
      Object.defineProperty(e, "message", { value: message, configurable: true, writable: true });
    }
    throw e;
  } finally {
    log.dispose();
  }
  return {
    steps: records,
    evals,
    peak: runPeak,
    peakTotal: runPeakTotal,
    compiles: gpu.pipelines.size - compiles0.count,
    compileMs: gpu.pipelines.compileMs - compiles0.ms,
  };
}
