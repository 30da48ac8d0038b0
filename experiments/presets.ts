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
  /** What `deno task experiment` does with this preset as its base. */
  experiment: ExperimentSettings;
}

/** The experiment's fine-tuning settings, the same for every method. */
export interface ExperimentSettings {
  /** Examples per task (training, held out). */
  tasks: { train: number; dev: number; test: number };
  /** Longest WordNet definition kept (characters), so prompt + response fit the block. */
  maxDefinitionChars: number;
  blockSize: number;
  batchSize: number;
  /** Fine-tuning steps per run, and per learning-rate sweep run. */
  steps: number;
  sweepSteps: number;
  /** LISA's K. */
  period: number;
  /** Learning rates swept per method family (picked by dev loss on the definitions task). */
  lrs: { full: number[]; lora: number[]; lisa: number[] };
  /** `--ablations`: LISA γ and K values and seeds, each against LoRA r = 8 with the same seeds. */
  ablation: { gammas: number[]; periods: number[]; seeds: number[] };
}

/** All presets by name. */
export const PRESETS: Record<string, Preset> = {
  tiny: {
    name: "tiny",
    // n_positions 128 so the experiment's 72-token examples fit; pretraining uses 64-token windows.
    model: { vocabSize: 256, blockSize: 128, nLayer: 2, nHead: 2, nEmbd: 64 },
    batchSize: 4,
    blockSize: 64,
    steps: 40,
    lr: 3e-3,
    warmup: 4,
    evalEvery: 20,
    evalBatches: 4,
    valTokens: 4096,
    experiment: {
      tasks: { train: 48, dev: 16, test: 16 },
      maxDefinitionChars: 40,
      blockSize: 72,
      batchSize: 4,
      steps: 6,
      sweepSteps: 3,
      period: 2,
      lrs: { full: [1e-3, 3e-3], lora: [3e-3, 1e-2], lisa: [1e-3, 3e-3] },
      ablation: { gammas: [1, 2], periods: [1, 2, 3], seeds: [0, 1] },
    },
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
    experiment: {
      tasks: { train: 400, dev: 64, test: 64 },
      maxDefinitionChars: 40,
      blockSize: 72,
      batchSize: 8,
      steps: 24,
      sweepSteps: 6,
      period: 4,
      lrs: { full: [3e-4, 1e-3, 3e-3], lora: [1e-3, 3e-3, 1e-2], lisa: [3e-4, 1e-3, 3e-3] },
      ablation: { gammas: [1, 2, 4], periods: [2, 5, 10], seeds: [0, 1, 2] },
    },
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
    experiment: {
      tasks: { train: 2000, dev: 200, test: 200 },
      maxDefinitionChars: 120,
      blockSize: 64,
      batchSize: 16,
      steps: 300,
      sweepSteps: 50,
      period: 20,
      lrs: { full: [1e-5, 3e-5, 1e-4], lora: [1e-4, 3e-4, 1e-3], lisa: [1e-5, 3e-5, 1e-4] },
      ablation: { gammas: [1, 2, 4], periods: [10, 20, 50], seeds: [0, 1, 2] },
    },
  },
};

/** The preset called `name`; throws listing the names when there is none. */
export function preset(name: string): Preset {
  const p = Object.hasOwn(PRESETS, name) ? PRESETS[name] : undefined;
  if (!p) {
    throw new Error(`unknown preset ${JSON.stringify(name)}; presets: ${Object.keys(PRESETS).join(", ")}`);
  }
  return p;
}
