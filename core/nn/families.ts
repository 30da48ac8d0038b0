/**
 * Model sizes of either family as one plain object, and a fresh model from it: what presets, the
 * pretraining CLI and the experiment build models from. A spec without `family` is GPT-2 (so the
 * presets written before LLaMA keep their serialized form).
 */
import type { Gpu } from "../gpu.ts";
import { GPT, type GPTConfig } from "./gpt.ts";
import { Llama } from "./llama.ts";
import type { LlamaConfig } from "./llama_config.ts";
import type { LanguageModel } from "./model.ts";

/** GPT-2 sizes (`family` absent or `gpt2`) or LLaMA sizes (`family: "llama"`). */
export type ModelSpec = (GPTConfig & { family?: "gpt2" }) | (LlamaConfig & { family: "llama" });

/** A fresh model of `spec`'s family with its family's init drawn from `seed`. */
export function createModel(gpu: Gpu, spec: ModelSpec, options: { seed?: number } = {}): LanguageModel {
  if (spec.family === "llama") {
    const { family: _, ...config } = spec;
    return new Llama(gpu, config, options);
  }
  const { family: _, ...config } = spec;
  return new GPT(gpu, config, options);
}

/**
 * The config.json key that sets `model`'s longest sequence, for error messages: `n_positions` (GPT-2),
 * `max_position_embeddings` (LLaMA), or `sliding_window` (a Mistral whose window is shorter: longer
 * sequences would need sliding-window attention, which is not implemented).
 */
export function positionsKey(model: LanguageModel): string {
  if (model.family === "gpt2") return "n_positions";
  return (model.config as LlamaConfig).slidingWindow !== undefined
    ? "sliding_window"
    : "max_position_embeddings";
}
