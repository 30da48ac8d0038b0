/**
 * LLaMA-family model sizes and their Hugging Face `config.json` (model_type `llama` or `mistral`):
 * parsed with every field the model depends on checked, so an unsupported checkpoint fails at load
 * naming the key, never later as a wrong number.
 */
import { CheckpointError } from "../io/hf.ts";
import { describe } from "../io/safetensors.ts";
import { checkRopeScaling } from "../ops/rope.ts";

/** The model types `loadModel` reads. */
export const MODEL_TYPES = ["gpt2", "llama", "mistral"] as const;

/** One of {@link MODEL_TYPES}. */
export type ModelType = typeof MODEL_TYPES[number];

/** Sizes and constants of a LLaMA-family model (transformers' field in each comment). */
export interface LlamaConfig {
  /** vocab_size */
  vocabSize: number;
  /** max_position_embeddings: the longest sequence. */
  blockSize: number;
  /** num_hidden_layers */
  nLayer: number;
  /** num_attention_heads */
  nHead: number;
  /** num_key_value_heads (grouped-query attention when below nHead; nHead when absent). */
  nKvHead: number;
  /** hidden_size */
  nEmbd: number;
  /** intermediate_size: the SwiGLU width. */
  nInner: number;
  /** rms_norm_eps */
  rmsNormEps: number;
  /** rope_theta (10000 when absent). */
  ropeTheta: number;
  /** tie_word_embeddings (false when absent, as LlamaConfig's default). */
  tiedHead: boolean;
  /**
   * Mistral's sliding_window when it is what caps `blockSize` (shorter than max_position_embeddings);
   * absent otherwise. Named in the error for a longer sequence.
   */
  slidingWindow?: number;
}

/**
 * The `model_type` of a config.json: `gpt2` when absent (GPT-2 files from before the field), else
 * one of {@link MODEL_TYPES}; anything else is an error naming the supported types.
 */
export function modelTypeOf(raw: unknown, where = "config.json"): ModelType {
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    throw new CheckpointError(`${where}: not a JSON object`);
  }
  const t = (raw as Record<string, unknown>).model_type ?? "gpt2";
  if (!(MODEL_TYPES as readonly unknown[]).includes(t)) {
    throw new CheckpointError(
      `${where}: model_type ${describe(t)} is not supported; supported: ${MODEL_TYPES.join(", ")}`,
    );
  }
  return t as ModelType;
}

/**
 * A LLaMA or Mistral config.json as {@link LlamaConfig}. Rejected, naming the key: another
 * model_type, an activation other than silu, attention or MLP biases, a rope_scaling we do not
 * implement, heads that do not divide hidden_size, key/value heads that do not divide heads. A
 * Mistral sliding window shorter than max_position_embeddings becomes the longest sequence
 * (`blockSize`): within it sliding-window attention is causal attention.
 */
export function llamaConfigFromHF(raw: unknown, where = "config.json"): LlamaConfig {
  const type = modelTypeOf(raw, where);
  if (type === "gpt2") throw new CheckpointError(`${where}: model_type gpt2 is not a LLaMA-family model`);
  const j = raw as Record<string, unknown>;
  const fail = (m: string): never => {
    throw new CheckpointError(`${where}: ${m}`);
  };
  const int = (k: string, fallback?: number): number => {
    const v = j[k] ?? fallback;
    if (!Number.isSafeInteger(v) || (v as number) <= 0) {
      fail(`${k} is ${describe(v)}, expected a positive integer`);
    }
    return v as number;
  };
  const positive = (k: string, fallback: number): number => {
    const v = j[k] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      fail(`${k} ${describe(v)} is not a positive number`);
    }
    return v as number;
  };
  const act = j.hidden_act ?? "silu";
  if (act !== "silu") fail(`hidden_act ${describe(act)} is not silu`);
  for (const k of ["attention_bias", "mlp_bias"]) {
    if (j[k] !== undefined && j[k] !== false) fail(`${k} ${describe(j[k])}: biases are not supported`);
  }
  try {
    checkRopeScaling(j.rope_scaling);
  } catch (e) {
    fail((e as Error).message);
  }
  const tie = j.tie_word_embeddings ?? false;
  if (typeof tie !== "boolean") fail(`tie_word_embeddings ${describe(tie)} is not true or false`);
  const nHead = int("num_attention_heads");
  const config: LlamaConfig = {
    vocabSize: int("vocab_size"),
    blockSize: int("max_position_embeddings"),
    nLayer: int("num_hidden_layers"),
    nHead,
    nKvHead: int("num_key_value_heads", nHead),
    nEmbd: int("hidden_size"),
    nInner: int("intermediate_size"),
    rmsNormEps: positive("rms_norm_eps", 1e-6),
    ropeTheta: positive("rope_theta", 10000),
    tiedHead: tie as boolean,
  };
  if (config.nEmbd % nHead !== 0) {
    fail(`hidden_size ${config.nEmbd} is not divisible by num_attention_heads ${nHead}`);
  }
  if ((config.nEmbd / nHead) % 2 !== 0) {
    fail(`head size ${config.nEmbd / nHead} is odd: rotary embeddings need it even`);
  }
  if (nHead % config.nKvHead !== 0) {
    fail(`num_attention_heads ${nHead} is not divisible by num_key_value_heads ${config.nKvHead}`);
  }
  if (j.head_dim !== undefined && j.head_dim !== null && j.head_dim !== config.nEmbd / nHead) {
    fail(
      `head_dim ${describe(j.head_dim)} is not hidden_size / num_attention_heads (${config.nEmbd / nHead})`,
    );
  }
  // Mistral attends within a sliding window: for sequences up to the window that is plain causal
  // attention, so the longest sequence is capped there rather than computed differently.
  if (type === "mistral" && j.sliding_window !== undefined && j.sliding_window !== null) {
    const w = int("sliding_window");
    if (w < config.blockSize) {
      config.blockSize = w;
      config.slidingWindow = w;
    }
  }
  return config;
}

/** `c` as a transformers LlamaConfig config.json object (MistralConfig when it has a sliding window). */
export function llamaConfigToHF(c: LlamaConfig): Record<string, unknown> {
  const mistral = c.slidingWindow !== undefined;
  return {
    model_type: mistral ? "mistral" : "llama",
    architectures: [mistral ? "MistralForCausalLM" : "LlamaForCausalLM"],
    ...(mistral ? { sliding_window: c.slidingWindow } : {}),
    vocab_size: c.vocabSize,
    max_position_embeddings: c.blockSize,
    num_hidden_layers: c.nLayer,
    num_attention_heads: c.nHead,
    num_key_value_heads: c.nKvHead,
    hidden_size: c.nEmbd,
    intermediate_size: c.nInner,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: null,
    tie_word_embeddings: c.tiedHead,
    hidden_act: "silu",
    attention_bias: false,
    mlp_bias: false,
    torch_dtype: "float32",
  };
}
