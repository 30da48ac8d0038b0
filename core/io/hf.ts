/**
 * Hugging Face GPT-2 directories: `config.json` + `model.safetensors`. Loading accepts bare keys
 * (`wte.weight`) or `transformer.`-prefixed ones, an explicit `lm_head.weight` equal to wte (the
 * head is tied), and ignores the `attn.bias` / `attn.masked_bias` buffers; GPT-2's Conv1D weights
 * are stored (in, out), as our Linear keeps them. Saving writes the same layout, atomically.
 */
import type { Gpu } from "../gpu.ts";
import type { Tensor } from "../tensor.ts";
import { GPT, type GPTConfig, validateConfig } from "../nn/gpt.ts";
import { encodeSafetensors, type F32Tensor, readSafetensorsFile, writeFileAtomic } from "./safetensors.ts";

/** How tensor names are spelled in a checkpoint. */
export type KeyStyle = "bare" | "transformer";

/** Raised for an unusable config.json or checkpoint; names the file and the field or key. */
export class CheckpointError extends Error {}

/** Our config from a Hugging Face GPT-2 config.json object; `where` names the file in errors. */
export function configFromHF(raw: unknown, where = "config.json"): GPTConfig {
  if (!raw || typeof raw !== "object") throw new CheckpointError(`${where}: not a JSON object`);
  const j = raw as Record<string, unknown>;
  if (j.model_type !== undefined && j.model_type !== "gpt2") {
    throw new CheckpointError(`${where}: model_type ${JSON.stringify(j.model_type)} is not gpt2`);
  }
  const act = j.activation_function ?? "gelu_new";
  if (act !== "gelu_new") {
    throw new CheckpointError(`${where}: activation_function ${JSON.stringify(act)} is not gelu_new`);
  }
  if (j.n_inner !== undefined && j.n_inner !== null && j.n_inner !== 4 * (j.n_embd as number)) {
    throw new CheckpointError(`${where}: n_inner ${j.n_inner} is not 4·n_embd`);
  }
  const int = (k: string, fallback?: string): number => {
    const v = j[k] ?? (fallback ? j[fallback] : undefined);
    if (!Number.isInteger(v) || (v as number) <= 0) {
      throw new CheckpointError(`${where}: ${k} is ${JSON.stringify(v)}, expected a positive integer`);
    }
    return v as number;
  };
  const eps = j.layer_norm_epsilon ?? 1e-5;
  if (typeof eps !== "number" || !(eps > 0)) {
    throw new CheckpointError(`${where}: layer_norm_epsilon ${eps} is not a positive number`);
  }
  const config: GPTConfig = {
    vocabSize: int("vocab_size"),
    blockSize: int("n_positions", "n_ctx"),
    nLayer: int("n_layer"),
    nHead: int("n_head"),
    nEmbd: int("n_embd"),
    layerNormEps: eps,
  };
  try {
    validateConfig(config);
  } catch (e) {
    throw new CheckpointError(`${where}: ${(e as Error).message}`);
  }
  return config;
}

/** A Hugging Face config.json object for `c` (what transformers' GPT2Config reads). */
export function configToHF(c: GPTConfig): Record<string, unknown> {
  const gpt2Vocab = c.vocabSize >= 50257;
  return {
    architectures: ["GPT2LMHeadModel"],
    model_type: "gpt2",
    vocab_size: c.vocabSize,
    n_positions: c.blockSize,
    n_ctx: c.blockSize,
    n_embd: c.nEmbd,
    n_layer: c.nLayer,
    n_head: c.nHead,
    n_inner: null,
    activation_function: "gelu_new",
    layer_norm_epsilon: c.layerNormEps ?? 1e-5,
    resid_pdrop: 0,
    embd_pdrop: 0,
    attn_pdrop: 0,
    initializer_range: 0.02,
    tie_word_embeddings: true,
    bos_token_id: gpt2Vocab ? 50256 : 0,
    eos_token_id: gpt2Vocab ? 50256 : 0,
  };
}

const IGNORED = /\.attn\.(bias|masked_bias)$/;

/** Loads a GPT-2 directory; returns the model and the key style its checkpoint used. */
export async function loadGPT2(gpu: Gpu, dir: string): Promise<{ model: GPT; keyStyle: KeyStyle }> {
  const cfgPath = `${dir}/config.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(cfgPath);
  } catch (e) {
    throw new CheckpointError(`${cfgPath}: cannot read (${(e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${cfgPath}: not valid JSON (${(e as Error).message})`);
  }
  const config = configFromHF(raw, cfgPath);
  const stPath = `${dir}/model.safetensors`;
  try {
    await Deno.stat(stPath);
  } catch {
    throw new CheckpointError(
      `${stPath}: missing (only safetensors checkpoints are read; convert pytorch_model.bin first)`,
    );
  }
  const st = await readSafetensorsFile(stPath);
  const names = st.names();
  const keyStyle: KeyStyle = names.some((n) => n.startsWith("transformer.")) ? "transformer" : "bare";
  const strip = (n: string) => (keyStyle === "transformer" && n.startsWith("transformer.") ? n.slice(12) : n);
  const keyOf = new Map(names.filter((n) => !IGNORED.test(n)).map((n) => [strip(n), n]));
  const unused = new Set(keyOf.keys());
  const model = new GPT(gpu, config, { init: false });
  try {
    const head = keyOf.get("lm_head.weight");
    let wte: Float32Array | null = null; // kept only for the tied-head check
    for (const [name, t] of model.namedParameters()) {
      const key = keyOf.get(name);
      if (!key) {
        throw new CheckpointError(
          `${stPath}: missing tensor ${keyStyle === "transformer" ? "transformer." : ""}${name}`,
        );
      }
      const e = st.entries.get(key)!;
      if (e.shape.length !== t.shape.length || e.shape.some((d, i) => d !== t.shape[i])) {
        throw new CheckpointError(
          `${stPath}: ${key} has shape [${e.shape}], expected [${t.shape}] for this config`,
        );
      }
      const data = st.getF32(key);
      t.upload(data);
      if (head && name === "wte.weight") wte = data;
      unused.delete(name);
    }
    if (head) {
      const lm = st.getF32(head);
      if (lm.length !== wte!.length || lm.some((x, i) => x !== wte![i])) {
        throw new CheckpointError(
          `${stPath}: lm_head.weight differs from wte.weight; only tied heads are supported`,
        );
      }
      unused.delete("lm_head.weight");
    }
    if (unused.size) {
      throw new CheckpointError(
        `${stPath}: unexpected tensors ${[...unused].slice(0, 5).map((n) => keyOf.get(n)).join(", ")}`,
      );
    }
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, keyStyle };
}

/** Host copies of `params` (default: every parameter of `model`), by name (one GPU round trip). */
export async function downloadParameters(
  model: GPT,
  params: [string, Tensor][] = model.namedParameters(),
): Promise<Map<string, F32Tensor>> {
  const reads = params.map(([, t]) => t.read());
  await model.gpu.submit();
  const out = new Map<string, F32Tensor>();
  for (let i = 0; i < params.length; i++) {
    out.set(params[i][0], { shape: params[i][1].shape, data: (await reads[i]) as Float32Array });
  }
  return out;
}

/**
 * Writes `model` as a Hugging Face GPT-2 directory (created if needed), files replaced atomically.
 * LoRA adapters are not part of it (export them with the LoRA method, or merge them first).
 */
export async function saveGPT2(model: GPT, dir: string, keyStyle: KeyStyle = "bare"): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const params = await downloadParameters(
    model,
    model.namedParameters().filter(([n]) => !n.includes(".lora_")),
  );
  const tensors: Record<string, F32Tensor> = {};
  for (const [name, t] of params) tensors[keyStyle === "transformer" ? `transformer.${name}` : name] = t;
  await writeFileAtomic(`${dir}/model.safetensors`, encodeSafetensors(tensors, { format: "pt" }));
  await writeFileAtomic(`${dir}/config.json`, JSON.stringify(configToHF(model.config), null, 2) + "\n");
}
