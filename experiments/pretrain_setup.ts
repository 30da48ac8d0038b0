/**
 * The pretraining run's data and settings for a preset and seed, with no file access, so the CLI
 * (experiments/pretrain.ts) and the web page build the same batches, optimizer and schedule: a seeded
 * 1/64 of the corpus held out, batches drawn from seed + 1, AdamW β = (0.9, 0.95) with weight decay
 * 0.1, linear warmup (at most a tenth of the run) then cosine decay to lr/10, evaluation windows over
 * the held-out tokens.
 */
import { type Batch, evalWindows, splitTrainVal, StreamBatcher } from "../core/data/batches.ts";
import type { Gpu } from "../core/gpu.ts";
import { AdamW } from "../core/optim/adamw.ts";
import { makeSchedule, type Schedule } from "../core/optim/schedule.ts";
import type { Preset } from "./presets.ts";

/** What a pretraining run of `steps` steps on `tokens` trains and evaluates with. */
export interface PretrainSetup {
  /** Training tokens (the corpus less the held-out part). */
  trainTokens: Uint32Array;
  /** Held-out tokens, at most the preset's `valTokens`. */
  valTokens: Uint32Array;
  /** Batches of the training tokens, drawn from seed + 1. */
  batcher: StreamBatcher;
  /** AdamW with the pretraining settings. */
  optimizer: AdamW;
  /** Learning rate per step. */
  schedule: Schedule;
  /** Every evaluation window of the held-out tokens (periodic evaluations use the first few). */
  evalBatches: Batch[];
}

/** The data split, batcher, optimizer, schedule and evaluation batches of preset `p`'s pretraining. */
export function pretrainSetup(
  gpu: Gpu,
  p: Preset,
  tokens: Uint32Array,
  seed: number,
  steps: number,
): PretrainSetup {
  const { train: trainTokens, val } = splitTrainVal(tokens, 1 / 64, seed);
  const valTokens = val.subarray(0, Math.min(val.length, p.valTokens));
  // Short runs (tests, probes) keep the warmup to a tenth of the run.
  const warmup = Math.min(p.warmup, Math.floor(steps / 10));
  return {
    trainTokens,
    valTokens,
    batcher: new StreamBatcher(trainTokens, p.batchSize, p.blockSize, seed + 1),
    optimizer: new AdamW(gpu, { betas: [0.9, 0.95], weightDecay: 0.1 }),
    schedule: makeSchedule({ kind: "cosine", lr: p.lr, warmup, total: steps }),
    evalBatches: evalWindows(valTokens, p.blockSize, p.batchSize),
  };
}
