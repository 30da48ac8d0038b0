/**
 * The training loop, the same for every method: per step, the method picks the trainable set, the
 * model's loss is recorded with its backward, AdamW updates what has gradients, gradients are
 * released, and the step is submitted once. Losses are read back one step late, so waiting for a
 * loss overlaps the next step's GPU work. A NaN or infinite loss stops the run, naming the step and
 * the last checkpoint.
 */
import { backward } from "../autograd.ts";
import type { Batch } from "../data/batches.ts";
import { evaluate } from "../evaluate.ts";
import type { CategoryBytes } from "../memory.ts";
import type { GPT } from "../nn/gpt.ts";
import type { AdamW } from "../optim/adamw.ts";
import type { Schedule } from "../optim/schedule.ts";
import { tidy } from "../tensor.ts";
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
  /** Wall-clock milliseconds from the step's start to the next step's start (or to its loss, when
   * an evaluation or checkpoint follows). */
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
  model: GPT;
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
  /** Also evaluate before the first step (when starting at step 0). */
  evalAtStart?: boolean;
  /** Called after each step with its record (progress bars, logs). */
  onStep?: (r: StepRecord) => void;
  /**
   * Awaited after each step once its loss is known, outside every step's memory window (for
   * measurements such as weight norms that must not count as the step's memory).
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
}

/** Runs steps [startStep, steps) and returns their records. */
export async function train(s: TrainSetup): Promise<TrainResult> {
  const gpu = s.model.gpu;
  const records: StepRecord[] = [];
  const evals: EvalRecord[] = [];
  let lastCheckpoint = "none yet";
  let pending: {
    record: StepRecord;
    start: number;
    loss: Promise<Float32Array | Uint32Array>;
    norm?: Promise<Float32Array | Uint32Array>;
  } | null = null;
  await gpu.submit();
  const before = gpu.memory.stats();
  const runPeak = { ...before.live };
  let runPeakTotal = before.liveTotal;
  const runEval = async (step: number, batches: Batch[]) => {
    const r = { step, loss: (await evaluate(s.model, batches)).loss };
    evals.push(r);
    s.onEval?.(r);
  };
  if (s.evalAtStart && s.evalBatches && !s.startStep) await runEval(0, s.evalBatches);
  const settle = async () => {
    if (!pending) return;
    const p = pending;
    pending = null;
    p.record.loss = (await p.loss)[0];
    if (p.norm) p.record.gradNorm = (await p.norm)[0];
    if (p.record.ms === 0) p.record.ms = performance.now() - p.start;
    if (!Number.isFinite(p.record.loss)) {
      throw new TrainingDivergedError(
        `training diverged: loss is ${p.record.loss} at step ${p.record.step}; last checkpoint: ${lastCheckpoint}`,
      );
    }
    records.push(p.record);
    s.onStep?.(p.record);
  };
  for (let step = s.startStep ?? 0; step < s.steps; step++) {
    const start = performance.now();
    if (pending) pending.record.ms = start - pending.start;
    const batch = s.nextBatch();
    await s.method.beginStep(step, s.optimizer);
    gpu.memory.resetPeak();
    const lr = s.schedule(step);
    const loss = tidy(() => s.model.loss(batch));
    backward(loss);
    const params = s.method.trainable();
    const result = s.optimizer.step(params, lr, s.maxGradNorm);
    for (const [, p] of params) p.zeroGrad();
    const lossRead = loss.read();
    const normRead = result?.gradNorm.read();
    loss.dispose();
    result?.gradNorm.dispose();
    const stats = gpu.memory.stats();
    await gpu.submit();
    await settle();
    pending = {
      record: {
        step,
        loss: NaN,
        lr,
        activeLayers: s.method.activeLayers(),
        memory: stats.peak,
        peakTotal: stats.peakTotal,
        ms: 0,
      },
      start,
      loss: lossRead,
      norm: normRead,
    };
    for (const [c, v] of Object.entries(stats.peak) as [keyof CategoryBytes, number][]) {
      runPeak[c] = Math.max(runPeak[c], v);
    }
    runPeakTotal = Math.max(runPeakTotal, stats.peakTotal);
    if (s.afterStep) {
      // Measurements must see this step's weights, so settle now instead of one step late.
      const record = pending.record;
      await settle();
      await s.afterStep(record);
    }
    const done = step + 1;
    const last = done === s.steps;
    if (s.evalBatches && s.evalEvery && (done % s.evalEvery === 0 || last)) {
      await settle();
      await runEval(done, s.evalBatches);
    }
    if (s.checkpoint && ((s.checkpointEvery && done % s.checkpointEvery === 0) || last)) {
      await settle();
      lastCheckpoint = `${await s.checkpoint(done)} (after step ${done})`;
    }
  }
  await settle();
  return { steps: records, evals, peak: runPeak, peakTotal: runPeakTotal };
}
