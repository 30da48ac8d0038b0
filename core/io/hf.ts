/**
 * Hugging Face GPT-2 directories: `config.json` + `model.safetensors`. Loading accepts bare keys
 * (`wte.weight`) or `transformer.`-prefixed ones, an explicit `lm_head.weight` equal to wte (the
 * head is tied), and ignores the `attn.bias` / `attn.masked_bias` buffers; GPT-2's Conv1D weights
 * are stored (in, out), as our Linear keeps them. Saving writes the same layout, atomically.
 * A directory's `tokenizer.json`, when it has one, is read by `readTokenizer`.
 */
import type { Gpu } from "../gpu.ts";
import { exists, getHost, readFileOrNull } from "../host.ts";
import type { Tensor } from "../tensor.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { tokenizerFromJson } from "../data/hf_tokenizer.ts";
import { GPT, type GPTConfig, validateConfig } from "../nn/gpt.ts";
import type { LanguageModel } from "../nn/model.ts";
import {
  describe,
  type F32Tensor,
  label,
  oneLine,
  readSafetensorsFile,
  type SafeEntry,
  writeFileAtomic,
} from "./safetensors.ts";
import {
  encodeShardedSafetensors,
  INDEX_FILE,
  readShardedSafetensors,
  type SafetensorsLayout,
  SINGLE_FILE,
} from "./shards.ts";

/** How tensor names are spelled in a checkpoint. */
export type KeyStyle = "bare" | "transformer";

/** Raised for an unusable config.json or checkpoint; one line naming the file and the field or key. */
export class CheckpointError extends Error {}

/** Our config from a Hugging Face GPT-2 config.json object; `where` names the file in errors. */
export function configFromHF(raw: unknown, where = "config.json"): GPTConfig {
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    throw new CheckpointError(`${where}: not a JSON object`);
  }
  const j = raw as Record<string, unknown>;
  if (j.model_type !== undefined && j.model_type !== "gpt2") {
    throw new CheckpointError(`${where}: model_type ${describe(j.model_type)} is not gpt2`);
  }
  const act = j.activation_function ?? "gelu_new";
  if (act !== "gelu_new") {
    throw new CheckpointError(`${where}: activation_function ${describe(act)} is not gelu_new`);
  }
  const int = (k: string, fallback?: string): number => {
    const v = j[k] === undefined && fallback ? j[fallback] : j[k];
    if (!Number.isInteger(v) || (v as number) <= 0) {
      throw new CheckpointError(`${where}: ${k} is ${describe(v)}, expected a positive integer`);
    }
    if (!Number.isSafeInteger(v)) throw new CheckpointError(`${where}: ${k} is ${v}, beyond 2^53`);
    return v as number;
  };
  const eps = j.layer_norm_epsilon ?? 1e-5;
  if (typeof eps !== "number" || !Number.isFinite(eps) || eps <= 0) {
    throw new CheckpointError(`${where}: layer_norm_epsilon ${describe(eps)} is not a positive number`);
  }
  const config: GPTConfig = {
    vocabSize: int("vocab_size"),
    blockSize: int("n_positions", "n_ctx"),
    nLayer: int("n_layer"),
    nHead: int("n_head"),
    nEmbd: int("n_embd"),
    layerNormEps: eps,
  };
  if (j.n_inner !== undefined && j.n_inner !== null && j.n_inner !== 4 * config.nEmbd) {
    throw new CheckpointError(
      `${where}: n_inner ${describe(j.n_inner)} is not 4·n_embd (${4 * config.nEmbd})`,
    );
  }
  try {
    validateConfig(config);
  } catch (e) {
    throw new CheckpointError(`${where}: ${(e as Error).message}`);
  }
  return config;
}

/** GPT-2's parameters for `c`, by checkpoint name, in `GPT.namedParameters()` order; Conv1D weights (in, out). */
function gpt2Layout(c: GPTConfig): [string, number[]][] {
  const C = c.nEmbd;
  const linear = (name: string, inF: number, outF: number): [string, number[]][] => [
    [`${name}.weight`, [inF, outF]],
    [`${name}.bias`, [outF]],
  ];
  const norm = (name: string): [string, number[]][] => [[`${name}.weight`, [C]], [`${name}.bias`, [C]]];
  const layers = Array.from({ length: c.nLayer }, (_, i): [string, number[]][] => [
    ...norm(`h.${i}.ln_1`),
    ...linear(`h.${i}.attn.c_attn`, C, 3 * C),
    ...linear(`h.${i}.attn.c_proj`, C, C),
    ...norm(`h.${i}.ln_2`),
    ...linear(`h.${i}.mlp.c_fc`, C, 4 * C),
    ...linear(`h.${i}.mlp.c_proj`, 4 * C, C),
  ]);
  return [
    ["wte.weight", [c.vocabSize, C]],
    ["wpe.weight", [c.blockSize, C]],
    ...layers.flat(),
    ...norm("ln_f"),
  ];
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
const FLOAT_DTYPES = new Set(["F32", "F16", "BF16", "F64"]);
const sameShape = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Throws a CheckpointError naming `key` unless its entry in `st` has `shape` (`why` ends that
 * message) and a float dtype. Every loader checks its tensors with this before allocating.
 */
export function checkWeightEntry(
  st: CheckpointTensors,
  where: string,
  key: string,
  shape: readonly number[],
  why: string,
): void {
  const e = st.entries.get(key)!;
  if (!sameShape(e.shape, shape)) {
    throw new CheckpointError(`${where}: ${label(key)} has shape [${e.shape}], expected [${shape}] ${why}`);
  }
  if (!FLOAT_DTYPES.has(e.dtype)) {
    throw new CheckpointError(`${where}: ${label(key)} is ${e.dtype}; weights are F32, F16, BF16 or F64`);
  }
}

/** Throws a CheckpointError listing (up to five of) `keys` when there are any: tensors no parameter takes. */
export function refuseUnexpected(where: string, keys: readonly string[]): void {
  if (keys.length === 0) return;
  throw new CheckpointError(
    `${where}: unexpected tensors ${
      keys.slice(0, 5).map((k) => label(k)).join(", ")
    } (not in the model config.json describes)`,
  );
}

/**
 * Uploads every one of `params` from `st` (the tensor `keyOf(name)`), refusing non-finite values,
 * after checking that `params` is `layout` name for name and shape (`outOfStep` is the internal
 * error otherwise). Returns the values uploaded for `keep` (a tied head's embedding), else null.
 */
export function uploadWeights(
  params: [string, Tensor][],
  layout: [string, number[]][],
  st: CheckpointTensors,
  where: string,
  keyOf: (name: string) => string,
  outOfStep: string,
  keep?: string,
): Float32Array | null {
  if (
    params.length !== layout.length ||
    params.some(([n, t], i) => n !== layout[i][0] || !sameShape(t.shape, layout[i][1]))
  ) {
    throw new Error(outOfStep);
  }
  let kept: Float32Array | null = null;
  for (const [name, t] of params) {
    const data = finite(st.getF32(keyOf(name)), where, keyOf(name));
    t.upload(data);
    if (name === keep) kept = data;
  }
  return kept;
}

/**
 * Loads a GPT-2 directory (`model.safetensors`, or shards with their index); returns the model, the
 * key style its checkpoint used and whether it was sharded. `configJson`: the folder's config.json
 * when the caller has parsed it already.
 */
export async function loadGPT2(
  gpu: Gpu,
  dir: string,
  configJson?: unknown,
): Promise<{ model: GPT; keyStyle: KeyStyle; sharded: boolean }> {
  const cfgPath = `${dir}/config.json`;
  const raw = configJson ?? await readConfigJson(dir);
  const config = configFromHF(raw, cfgPath);
  const { tensors: st, sharded, where: stPath } = await readCheckpointTensors(dir);
  const names = st.names();
  const keyStyle: KeyStyle = names.some((n) => n.startsWith("transformer.")) ? "transformer" : "bare";
  const strip = (n: string) => (keyStyle === "transformer" && n.startsWith("transformer.") ? n.slice(12) : n);
  const keyOf = new Map<string, string>();
  for (const key of names.filter((n) => !IGNORED.test(n))) {
    const other = keyOf.get(strip(key));
    if (other !== undefined) {
      throw new CheckpointError(
        `${stPath}: tensors ${label(other)} and ${label(key)} are the same parameter`,
      );
    }
    keyOf.set(strip(key), key);
  }
  const prefix = keyStyle === "transformer" ? "transformer." : "";
  // Every check the header allows comes before the model is allocated, so a config that asks for more
  // than the file holds (n_layer 10^6, vocab_size 10^9) fails naming the tensor instead of allocating.
  for (let i = 0; i < config.nLayer; i++) {
    if (!keyOf.has(`h.${i}.ln_1.weight`)) {
      throw new CheckpointError(
        `${stPath}: missing tensor ${prefix}h.${i}.ln_1.weight (config.json has n_layer ${config.nLayer})`,
      );
    }
  }
  const layout = gpt2Layout(config);
  const wanted = new Map(layout);
  for (const [name, shape] of layout) {
    const key = keyOf.get(name);
    if (!key) throw new CheckpointError(`${stPath}: missing tensor ${prefix}${name}`);
    checkWeightEntry(st, stPath, key, shape, "for this config.json");
  }
  const head = keyOf.get("lm_head.weight");
  if (head) checkWeightEntry(st, stPath, head, wanted.get("wte.weight")!, "(the tied head is wte.weight)");
  refuseUnexpected(
    stPath,
    [...keyOf].filter(([n]) => !wanted.has(n) && n !== "lm_head.weight").map(([, k]) => k),
  );
  const model = new GPT(gpu, config, { init: false });
  try {
    const wte = uploadWeights(
      model.namedParameters(),
      layout,
      st,
      stPath,
      (name) => keyOf.get(name)!,
      "hf.ts: gpt2Layout is out of step with GPT.namedParameters()",
      head ? "wte.weight" : undefined, // kept only for the tied-head check
    );
    if (head) {
      const lm = st.getF32(head);
      if (lm.some((x, i) => x !== wte![i])) {
        throw new CheckpointError(
          `${stPath}: lm_head.weight differs from wte.weight; only tied heads are supported`,
        );
      }
    }
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, keyStyle, sharded };
}

/** The parsed `<dir>/config.json`; a missing or malformed file is a CheckpointError naming it. */
export async function readConfigJson(dir: string): Promise<unknown> {
  const cfgPath = `${dir}/config.json`;
  const bytes = await readOptional(cfgPath);
  if (!bytes) throw new CheckpointError(`${cfgPath}: cannot read (no such file)`);
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new CheckpointError(`${cfgPath}: not valid JSON (${oneLine((e as Error).message)})`);
  }
}

/**
 * The tokenizer of `<dir>/tokenizer.json`, or null when the directory has no such file. Throws
 * `TokenizerJsonError` for a file it cannot use and `CheckpointError` for one it cannot read.
 */
export async function readTokenizer(dir: string): Promise<Tokenizer | null> {
  const path = `${dir}/tokenizer.json`;
  const bytes = await readOptional(path);
  return bytes && tokenizerFromJson(bytes, path);
}

/** The bytes of `path`, or null when there is no such file; any other failure names the file. */
async function readOptional(path: string): Promise<Uint8Array | null> {
  try {
    return await readFileOrNull(path);
  } catch (e) {
    throw new CheckpointError(`${path}: cannot read (${oneLine((e as Error).message)})`);
  }
}

/** `data`, when every value is finite; else an error naming the tensor and the first bad element. */
export function finite(data: Float32Array, path: string, key: string): Float32Array {
  const at = data.findIndex((x) => !Number.isFinite(x));
  if (at >= 0) throw new CheckpointError(`${path}: ${label(key)} holds ${data[at]} at element ${at}`);
  return data;
}

/** Host copies of `params` (default: every parameter of `model`), by name (one GPU round trip). */
export async function downloadParameters(
  model: LanguageModel,
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
  await getHost().mkdir(dir, { recursive: true });
  const params = await downloadParameters(
    model,
    model.namedParameters().filter(([n]) => !n.includes(".lora_")),
  );
  const tensors: Record<string, F32Tensor> = {};
  for (const [name, t] of params) tensors[keyStyle === "transformer" ? `transformer.${name}` : name] = t;
  // One file (an index left by an earlier sharded save is removed with its shards).
  await writeSafetensorsLayout(dir, encodeShardedSafetensors(tensors, Infinity));
  await writeFileAtomic(`${dir}/config.json`, JSON.stringify(configToHF(model.config), null, 2) + "\n");
}

const SHARD_NAME = /^model-\d{5}-of-\d{5}\.safetensors$/;
/** Shards under their staging names (see {@link writeSafetensorsLayout}). */
const STAGED_NAME = /^next-model-\d{5}-of-\d{5}\.safetensors$/;
/** What `writeFileAtomic` leaves when killed between its write and its rename. */
const ATOMIC_LEFTOVER = /\.tmp-\d+-\d+$/;

/** The files an index's weight_map names; none when it does not parse (then nothing loads from it). */
function indexFiles(text: Uint8Array): Set<string> {
  try {
    const j = JSON.parse(new TextDecoder().decode(text)) as { weight_map?: Record<string, unknown> };
    return new Set(Object.values(j.weight_map ?? {}).filter((f): f is string => typeof f === "string"));
  } catch {
    return new Set();
  }
}

/** `index` with every shard file name passed through `rename`. */
function renameInIndex(index: string, rename: (file: string) => string): string {
  const j = JSON.parse(index) as { weight_map: Record<string, string> };
  for (const [k, f] of Object.entries(j.weight_map)) j.weight_map[k] = rename(f);
  return JSON.stringify(j, null, 2) + "\n";
}

/**
 * Writes a checkpoint's weight files (from `encodeShardedSafetensors`) into `dir`, created if needed,
 * keeping its other files, so that at every moment the folder loads whole: the old weights until one
 * rename switches to the new ones. Each file is written into a temporary folder inside `dir` and
 * renamed in; a file the index in place names is never replaced while that index is there.
 *
 * - One file: `model.safetensors` goes in first (an index in place still wins), then the old index
 *   is removed: the switch.
 * - Shards whose names the old index does not use: they go in, then the new index is renamed over the
 *   old one: the switch.
 * - Shards under the names the old index uses (the same shard count): first under staging names
 *   (`next-model-…`) with an index naming them (switch one), then under their own names with the
 *   final index (switch two).
 *
 * Afterwards stale shards, staging copies, a stale `model.safetensors` (when sharded), temporary
 * folders and `writeFileAtomic` leftovers of a killed save are removed. (The folder swap of
 * checkpoint.ts would not do here: it replaces the whole folder, config and tokenizer included.)
 */
export async function writeSafetensorsLayout(dir: string, layout: SafetensorsLayout): Promise<void> {
  const host = getHost();
  await host.mkdir(dir, { recursive: true });
  const tmp = `${dir}/.safetensors.tmp-${host.pid}-${Date.now()}`;
  await host.mkdir(tmp);
  const encoder = new TextEncoder();
  /** Writes `bytes` to `dir/name` by way of the temporary folder. */
  const put = async (name: string, bytes: Uint8Array) => {
    await host.writeFile(`${tmp}/${name}`, bytes);
    await host.rename(`${tmp}/${name}`, `${dir}/${name}`);
  };
  try {
    const oldIndex = await readFileOrNull(`${dir}/${INDEX_FILE}`);
    if (layout.index === null) {
      await put(SINGLE_FILE, layout.files.get(SINGLE_FILE)!);
      if (oldIndex) await host.remove(`${dir}/${INDEX_FILE}`);
    } else {
      const inUse = oldIndex ? indexFiles(oldIndex) : new Set<string>();
      if ([...layout.files.keys()].some((f) => inUse.has(f))) {
        const staged = (f: string) => `next-${f}`;
        for (const [file, bytes] of layout.files) await put(staged(file), bytes);
        await put(INDEX_FILE, encoder.encode(renameInIndex(layout.index, staged)));
      }
      for (const [file, bytes] of layout.files) await put(file, bytes);
      await put(INDEX_FILE, encoder.encode(layout.index));
    }
    for (const e of await host.readDir(dir)) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory) {
        // A temporary folder left by a write that was killed holds nothing that is in place.
        if (e.name.startsWith(".safetensors.tmp-") && path !== tmp) {
          await host.remove(path, { recursive: true });
        }
        continue;
      }
      const stale = !layout.files.has(e.name) &&
        (SHARD_NAME.test(e.name) || STAGED_NAME.test(e.name) || ATOMIC_LEFTOVER.test(e.name) ||
          (e.name === SINGLE_FILE && layout.index !== null));
      if (stale) await host.remove(path);
    }
  } finally {
    await host.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/** Tensors of a checkpoint folder, one file or shards: names, header entries, f32 values. */
export interface CheckpointTensors {
  /** Header entries (dtype, shape) by tensor name. */
  readonly entries: ReadonlyMap<string, SafeEntry>;
  /** Tensor names, in file order. */
  names(): string[];
  /** The values of `name` as f32 (F16/BF16 converted). */
  getF32(name: string): Float32Array;
}

/**
 * The weights of a Hugging Face model folder: `model.safetensors.index.json` and its shards when the
 * index is there, else `model.safetensors`; `sharded` says which (a save writes the same layout back).
 * Neither present: an error naming both and saying that `.bin` checkpoints must be converted.
 */
export async function readCheckpointTensors(
  dir: string,
): Promise<{ tensors: CheckpointTensors; sharded: boolean; where: string }> {
  const indexPath = `${dir}/${INDEX_FILE}`;
  const index = await readOptional(indexPath);
  if (index) {
    // readShardedSafetensors names a shard it cannot read.
    const tensors = await readShardedSafetensors(
      new TextDecoder().decode(index),
      (file) => getHost().readFile(`${dir}/${file}`),
      indexPath,
    );
    return { tensors, sharded: true, where: indexPath };
  }
  const single = `${dir}/${SINGLE_FILE}`;
  if (!(await exists(single))) {
    throw new CheckpointError(
      `${dir}: neither ${INDEX_FILE} nor ${SINGLE_FILE} (only safetensors checkpoints are read; convert pytorch_model.bin first)`,
    );
  }
  return { tensors: await readSafetensorsFile(single), sharded: false, where: single };
}
