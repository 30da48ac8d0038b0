/**
 * One loader and one saver for every model family: `loadModel` reads `config.json`'s `model_type`
 * (gpt2 when absent; llama; mistral) and hands the folder to that family's reader; `saveModel` writes
 * a model back in its family's layout, as it was loaded when given the `source`.
 */
import type { Gpu } from "../gpu.ts";
import { readFileOrNull } from "../host.ts";
import { GPT } from "../nn/gpt.ts";
import { Llama } from "../nn/llama.ts";
import { type ModelType, modelTypeOf } from "../nn/llama_config.ts";
import type { LanguageModel } from "../nn/model.ts";
import { type Tokenizer, tokenizerFor } from "../data/tokenizer.ts";
import { type KeyStyle, loadGPT2, readConfigJson, readTokenizer, saveGPT2 } from "./hf.ts";
import { type LlamaSource, loadLlama, saveLlama } from "./llama.ts";
import { type WriteDType, writeFileAtomic } from "./safetensors.ts";

/** Where a loaded model came from: what a save needs to write it back the same way. */
export type ModelSource =
  | { modelType: "gpt2"; keyStyle: KeyStyle; sharded: boolean }
  | ({ modelType: "llama" | "mistral" } & LlamaSource);

/** A model and its source. */
export interface LoadedModel {
  /** The model, on the GPU. */
  model: LanguageModel;
  /** What it was loaded from. */
  source: ModelSource;
}

/**
 * Loads a Hugging Face model folder of any supported `model_type` (gpt2, llama, mistral); another
 * type is an error naming the supported ones.
 */
export async function loadModel(gpu: Gpu, dir: string): Promise<LoadedModel> {
  const raw = await readConfigJson(dir);
  const type: ModelType = modelTypeOf(raw, `${dir}/config.json`);
  if (type === "gpt2") {
    const { model, keyStyle, sharded } = await loadGPT2(gpu, dir, raw);
    return { model, source: { modelType: "gpt2", keyStyle, sharded } };
  }
  const { model, source } = await loadLlama(gpu, dir, raw);
  return { model, source: { modelType: type, ...source } };
}

/** Options of {@link saveModel}. */
export interface SaveModelOptions {
  /** What the model was loaded from (key style, config.json, sharding are kept). */
  source?: ModelSource;
  /** LLaMA: stored dtype (default F32). */
  dtype?: WriteDType;
}

/**
 * Writes `model` as a Hugging Face folder of its family, files replaced atomically. LoRA adapters are
 * not part of it (export them with the LoRA method, or merge them first).
 */
export async function saveModel(
  model: LanguageModel,
  dir: string,
  options: SaveModelOptions = {},
): Promise<void> {
  const source = options.source;
  if (model instanceof GPT) {
    return await saveGPT2(model, dir, source?.modelType === "gpt2" ? source.keyStyle : "bare");
  }
  if (model instanceof Llama) {
    const llamaSource = source && source.modelType !== "gpt2" ? source : undefined;
    return await saveLlama(model, dir, { source: llamaSource, dtype: options.dtype });
  }
  throw new Error(`saveModel: no writer for a model of family ${model.family}`);
}

/**
 * The tokenizer for text data of the model in `dir`: its `tokenizer.json` when it has one, else the
 * one its vocabulary size implies (bytes for 256, GPT-2 BPE for 50257; any other size is an error
 * saying to add a tokenizer.json or give token ids).
 */
export async function modelTokenizer(dir: string, vocabSize: number): Promise<Tokenizer> {
  return (await readTokenizer(dir)) ?? tokenizerFor(vocabSize);
}

/** Files beside the weights that describe the tokenizer and generation, copied into a saved model. */
export const MODEL_SIDE_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
];

/** Copies {@link MODEL_SIDE_FILES} that `from` has into `to` (atomically each), so `to` is a whole model folder. */
export async function copySideFiles(from: string, to: string): Promise<void> {
  for (const name of MODEL_SIDE_FILES) {
    const bytes = await readFileOrNull(`${from}/${name}`);
    if (bytes) await writeFileAtomic(`${to}/${name}`, bytes);
  }
}
