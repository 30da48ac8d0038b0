/**
 * Presets: plain objects with the model and its pretraining settings. `tiny` runs in seconds (tests),
 * `small` is the base model of the default experiment (byte-level, sized for 2 CPU cores on a
 * software adapter), `gpt2` is GPT-2 small (124M, GPT-2 BPE) for real GPUs.
 */
import type { GPTConfig } from "../core/nn/gpt.ts";

/** A model and how to pretrain it. */
export interface Preset {
  /** Preset name. */
  name: string;
  /** Model sizes. */
  model: GPTConfig;
  /** Sequences per step. */
  batchSize: number;
  /** Tokens per sequence (≤ model.blockSize). */
  blockSize: number;
  /** Pretraining steps. */
  steps: number;
  /** Peak learning rate (AdamW, cosine decay to lr/10). */
  lr: number;
  /** Linear warmup steps. */
  warmup: number;
  /** Evaluate every N steps on `evalBatches` validation batches. */
  evalEvery: number;
  evalBatches: number;
  /** Validation tokens kept for the final evaluation (written as val.bin). */
  valTokens: number;
}

/** All presets by name. */
export const PRESETS: Record<string, Preset> = {
  tiny: {
    name: "tiny",
    model: { vocabSize: 256, blockSize: 64, nLayer: 2, nHead: 2, nEmbd: 64 },
    batchSize: 4,
    blockSize: 64,
    steps: 40,
    lr: 3e-3,
    warmup: 4,
    evalEvery: 20,
    evalBatches: 4,
    valTokens: 4096,
  },
  small: {
    name: "small",
    model: { vocabSize: 256, blockSize: 128, nLayer: 8, nHead: 4, nEmbd: 128 },
    batchSize: 8,
    // 64-token windows: ~0.6 s per step on 2 cores with lavapipe (128 tokens: ~1.1 s).
    blockSize: 64,
    steps: 200,
    lr: 2e-3,
    warmup: 20,
    evalEvery: 50,
    evalBatches: 8,
    valTokens: 32768,
  },
  gpt2: {
    name: "gpt2",
    model: { vocabSize: 50257, blockSize: 1024, nLayer: 12, nHead: 12, nEmbd: 768 },
    batchSize: 8,
    blockSize: 1024,
    steps: 2000,
    lr: 6e-4,
    warmup: 100,
    evalEvery: 200,
    evalBatches: 20,
    valTokens: 262144,
  },
};

/** The preset called `name`; throws listing the names when there is none. */
export function preset(name: string): Preset {
  const p = PRESETS[name];
  if (!p) {
    throw new Error(`unknown preset ${JSON.stringify(name)}; presets: ${Object.keys(PRESETS).join(", ")}`);
  }
  return p;
}
