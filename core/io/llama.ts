/**
 * Hugging Face LLaMA/Mistral directories: `config.json` (model_type llama or mistral) and
 * `model.safetensors` or shards with `model.safetensors.index.json`; F32, F16 and BF16 tensors (F64
 * too), converted to f32. Keys are transformers' (`model.layers.0.self_attn.q_proj.weight`), Linear
 * weights (out, in); the rotary `inv_freq` buffers older checkpoints carry are ignored. Saving writes
 * the same layout (sharded beyond a size), atomically, keeping the folder's other files.
 */
import type { Gpu } from "../gpu.ts";
import { Llama } from "../nn/llama.ts";
import { type LlamaConfig, llamaConfigFromHF, llamaConfigToHF } from "../nn/llama_config.ts";
import {
  CheckpointError,
  checkWeightEntry,
  downloadParameters,
  readCheckpointTensors,
  readConfigJson,
  refuseUnexpected,
  uploadWeights,
  writeSafetensorsLayout,
} from "./hf.ts";
import { type F32Tensor, type WriteDType, writeFileAtomic } from "./safetensors.ts";
import { encodeShardedSafetensors, type ShardEntry } from "./shards.ts";

/** transformers' default `max_shard_size` ("5GB"). */
export const DEFAULT_SHARD_BYTES = 5_000_000_000;

const IGNORED = /\.rotary_emb\.inv_freq$/;

/** LLaMA's parameters for `c`, by checkpoint name and shape, in `Llama.namedParameters()` order. */
export function llamaLayout(c: LlamaConfig): [string, number[]][] {
  const C = c.nEmbd;
  const hd = C / c.nHead;
  const layer = (p: string): [string, number[]][] => [
    [`${p}.self_attn.q_proj.weight`, [c.nHead * hd, C]],
    [`${p}.self_attn.k_proj.weight`, [c.nKvHead * hd, C]],
    [`${p}.self_attn.v_proj.weight`, [c.nKvHead * hd, C]],
    [`${p}.self_attn.o_proj.weight`, [C, c.nHead * hd]],
    [`${p}.mlp.gate_proj.weight`, [c.nInner, C]],
    [`${p}.mlp.up_proj.weight`, [c.nInner, C]],
    [`${p}.mlp.down_proj.weight`, [C, c.nInner]],
    [`${p}.input_layernorm.weight`, [C]],
    [`${p}.post_attention_layernorm.weight`, [C]],
  ];
  return [
    ["model.embed_tokens.weight", [c.vocabSize, C]],
    ...Array.from({ length: c.nLayer }, (_, i) => layer(`model.layers.${i}`)).flat(),
    ["model.norm.weight", [C]],
    ...(c.tiedHead ? [] : [["lm_head.weight", [c.vocabSize, C]] as [string, number[]]]),
  ];
}

/** What a LLaMA checkpoint was, so a save can write it back the same way. */
export interface LlamaSource {
  /** The config.json object as read (a save writes it back with torch_dtype float32). */
  config: Record<string, unknown>;
  /** Whether the weights were sharded. */
  sharded: boolean;
  /** The largest shard's tensor bytes as f32: the limit that shards a save as the source was. */
  shardBytes: number;
}

/**
 * Loads a LLaMA or Mistral directory. `configJson`: the folder's config.json when the caller has
 * parsed it already.
 */
export async function loadLlama(
  gpu: Gpu,
  dir: string,
  configJson?: unknown,
): Promise<{ model: Llama; source: LlamaSource }> {
  const raw = configJson ?? await readConfigJson(dir);
  const config = llamaConfigFromHF(raw, `${dir}/config.json`);
  const { tensors: st, sharded, where } = await readCheckpointTensors(dir);
  const names = st.names().filter((n) => !IGNORED.test(n));
  const have = new Set(names);
  // Every check the header allows comes before the model is allocated, so a config that asks for more
  // than the files hold fails naming the tensor instead of allocating.
  for (let i = 0; i < config.nLayer; i++) {
    const key = `model.layers.${i}.input_layernorm.weight`;
    if (!have.has(key)) {
      throw new CheckpointError(
        `${where}: missing tensor ${key} (config.json has num_hidden_layers ${config.nLayer})`,
      );
    }
  }
  const layout = llamaLayout(config);
  const wanted = new Map(layout);
  for (const [name, shape] of layout) {
    if (!have.has(name)) {
      const why = name === "lm_head.weight" ? " (config.json says tie_word_embeddings false)" : "";
      throw new CheckpointError(`${where}: missing tensor ${name}${why}`);
    }
    checkWeightEntry(st, where, name, shape, "for this config.json");
  }
  // A tied checkpoint may still carry the head; it must then be the embedding.
  const tiedHead = config.tiedHead && have.has("lm_head.weight");
  if (tiedHead) {
    checkWeightEntry(
      st,
      where,
      "lm_head.weight",
      wanted.get("model.embed_tokens.weight")!,
      "(the tied head)",
    );
  }
  refuseUnexpected(where, names.filter((n) => !wanted.has(n) && !(tiedHead && n === "lm_head.weight")));
  const model = new Llama(gpu, config, { init: false });
  try {
    const embed = uploadWeights(
      model.namedParameters(),
      layout,
      st,
      where,
      (name) => name,
      "io/llama.ts: llamaLayout is out of step with Llama.namedParameters()",
      tiedHead ? "model.embed_tokens.weight" : undefined,
    );
    if (tiedHead) {
      const head = st.getF32("lm_head.weight");
      if (head.some((x, i) => x !== embed![i])) {
        throw new CheckpointError(
          `${where}: lm_head.weight differs from model.embed_tokens.weight, but config.json says tie_word_embeddings true`,
        );
      }
    }
  } catch (e) {
    model.dispose();
    throw e;
  }
  // The largest shard's tensors as f32: greedy sharding in file order with this limit regroups the
  // tensors as they were (every shard fits it, and nothing that did not fit before fits now).
  const perShard = new Map<string, number>();
  if (sharded) {
    for (const e of st.entries.values()) {
      const file = (e as ShardEntry).file;
      perShard.set(file, (perShard.get(file) ?? 0) + 4 * e.shape.reduce((a, b) => a * b, 1));
    }
  }
  return {
    model,
    source: {
      config: raw as Record<string, unknown>,
      sharded,
      shardBytes: sharded ? Math.max(...perShard.values()) : DEFAULT_SHARD_BYTES,
    },
  };
}

/** Options of {@link saveLlama}. */
export interface SaveLlamaOptions {
  /** What the model was loaded from: its config.json is kept and its shard count reproduced. */
  source?: LlamaSource;
  /** Largest shard (tensor bytes); default the source's, else {@link DEFAULT_SHARD_BYTES}. */
  maxShardBytes?: number;
  /** Stored dtype (default F32, the values trained). */
  dtype?: WriteDType;
}

/**
 * Writes `model` as a Hugging Face LLaMA directory (created if needed): config.json (the source's
 * when given, with torch_dtype set to what is written) and the weights, sharded beyond
 * `maxShardBytes`, all replaced atomically. LoRA adapters are not part of it (merge them first).
 */
export async function saveLlama(model: Llama, dir: string, options: SaveLlamaOptions = {}): Promise<void> {
  const dtype = options.dtype ?? "F32";
  const params = await downloadParameters(
    model,
    model.namedParameters().filter(([n]) => !n.includes(".lora_")),
  );
  const tensors: Record<string, F32Tensor> = {};
  for (const [name, t] of params) tensors[name] = { ...t, dtype };
  const limit = options.maxShardBytes ?? (options.source?.shardBytes ?? DEFAULT_SHARD_BYTES) *
      (dtype === "F32" ? 1 : 0.5);
  const config = options.source ? { ...options.source.config } : llamaConfigToHF(model.config);
  config.torch_dtype = { F32: "float32", F16: "float16", BF16: "bfloat16" }[dtype];
  await writeSafetensorsLayout(dir, encodeShardedSafetensors(tensors, limit));
  await writeFileAtomic(`${dir}/config.json`, JSON.stringify(config, null, 2) + "\n");
}
