/**
 * Sharded safetensors checkpoints as Hugging Face writes them: `model.safetensors.index.json`
 * ({"metadata": {"total_size": bytes}, "weight_map": {tensor: shard file}}) beside shards named
 * `model-00001-of-0000K.safetensors`. Reading checks the index against the shards' own headers;
 * writing splits tensors into shards of at most a given size. Files come and go as bytes, so this
 * runs in a browser too (the Deno-side writer is `writeSafetensorsLayout` in hf.ts).
 */
import {
  describe,
  encodeSafetensors,
  type F32Tensor,
  label,
  oneLine,
  type SafeEntry,
  Safetensors,
  SafetensorsError,
  tensorBytes,
} from "./safetensors.ts";

/** The index file's name in a model folder. */
export const INDEX_FILE = "model.safetensors.index.json";

/** The single file's name when a checkpoint is not sharded. */
export const SINGLE_FILE = "model.safetensors";

/** A header entry and the shard it lives in. */
export interface ShardEntry extends SafeEntry {
  /** The shard's file name, as the index gives it. */
  file: string;
}

/** All tensors of a sharded checkpoint, by name, with f32 access. */
export class ShardedSafetensors {
  /** Header entries by tensor name, in weight_map order. */
  readonly entries: Map<string, ShardEntry>;
  /** The index's `metadata` object. */
  readonly metadata: Record<string, unknown>;
  readonly #shards: Map<string, Safetensors>;
  readonly #where: string;

  /** Built by {@link readShardedSafetensors}. */
  constructor(
    entries: Map<string, ShardEntry>,
    shards: Map<string, Safetensors>,
    metadata: Record<string, unknown>,
    where: string,
  ) {
    this.entries = entries;
    this.#shards = shards;
    this.metadata = metadata;
    this.#where = where;
  }

  /** Tensor names, in weight_map order. */
  names(): string[] {
    return [...this.entries.keys()];
  }

  /** The values of `name` as f32 (F16/BF16 converted); throws naming the index when there is none. */
  getF32(name: string): Float32Array {
    const e = this.entries.get(name);
    if (!e) throw new SafetensorsError(this.#where, `no tensor named ${label(name)}`);
    return this.#shards.get(e.file)!.getF32(name);
  }
}

/** Whether `file` names a file in the index's own folder: no path separators, no "..", no NUL. */
function plainFileName(file: string): boolean {
  return file.length > 0 && file !== "." && !/[/\\]/.test(file) && !file.includes("\0") &&
    !file.includes("..");
}

/**
 * Parses an index (`indexText`), fetches each shard it names once through `readShard`, and checks
 * that index and shards agree. `where` (the index's path) names it in errors; shard paths are made
 * from its folder.
 */
export async function readShardedSafetensors(
  indexText: string,
  readShard: (file: string) => Promise<Uint8Array>,
  where: string = INDEX_FILE,
): Promise<ShardedSafetensors> {
  const fail = (m: string) => new SafetensorsError(where, m);
  let index: unknown;
  try {
    index = JSON.parse(indexText);
  } catch (e) {
    throw fail(`not valid JSON (${oneLine((e as Error).message)})`);
  }
  if (!isObject(index)) throw fail(`not a JSON object: ${describe(index)}`);
  const metadata = index.metadata ?? {};
  if (!isObject(metadata)) throw fail(`metadata is not an object: ${describe(metadata)}`);
  const total = metadata.total_size;
  if (total !== undefined && (!Number.isSafeInteger(total) || (total as number) < 0)) {
    throw fail(`metadata.total_size ${describe(total)} is not a non-negative integer below 2^53`);
  }
  const map = index.weight_map;
  if (map === undefined) throw fail("weight_map is missing");
  if (!isObject(map)) throw fail(`weight_map is not an object: ${describe(map)}`);
  const wanted = new Map<string, string>();
  for (const [name, file] of Object.entries(map)) {
    if (typeof file !== "string" || !plainFileName(file)) {
      throw fail(
        `weight_map.${label(name)}: ${describe(file)} is not a plain file name in the index's folder`,
      );
    }
    wanted.set(name, file);
  }
  if (wanted.size === 0) throw fail("weight_map lists no tensors");

  const folder = where.slice(0, where.lastIndexOf("/") + 1);
  const shards = new Map<string, Safetensors>();
  const holder = new Map<string, string>();
  for (const file of new Set(wanted.values())) {
    let bytes: Uint8Array;
    try {
      bytes = await readShard(file);
    } catch (e) {
      throw fail(`cannot read shard ${label(file)} (${oneLine(String((e as Error)?.message ?? e))})`);
    }
    const st = new Safetensors(bytes, `${folder}${file}`);
    shards.set(file, st);
    for (const name of st.names()) {
      const other = holder.get(name);
      if (other !== undefined) {
        throw fail(`tensor ${label(name)} is in two shards, ${label(other)} and ${label(file)}`);
      }
      if (!wanted.has(name)) {
        throw fail(`shard ${label(file)} holds ${label(name)}, which weight_map does not list`);
      }
      holder.set(name, file);
    }
  }

  const entries = new Map<string, ShardEntry>();
  let bytes = 0;
  for (const [name, file] of wanted) {
    const e = shards.get(file)!.entries.get(name);
    if (!e) throw fail(`weight_map.${label(name)} names shard ${label(file)}, which holds no such tensor`);
    entries.set(name, { ...e, file });
    bytes += e.offsets[1] - e.offsets[0];
  }
  if (total !== undefined && total !== bytes) {
    throw fail(`metadata.total_size is ${total} but the shards' tensors hold ${bytes} bytes`);
  }
  return new ShardedSafetensors(entries, shards, metadata, where);
}

/** The files of a checkpoint: shard (or single-file) bytes by file name, and the index text if sharded. */
export interface SafetensorsLayout {
  /** File name → safetensors bytes. */
  files: Map<string, Uint8Array>;
  /** The index's JSON text; null when everything fits in one `model.safetensors`. */
  index: string | null;
}

/**
 * Splits `tensors` into shards whose tensor data is at most `maxShardBytes` each (headers not
 * counted, as Hugging Face counts). A tensor is never split; one bigger than the limit gets a shard
 * of its own. One shard is written as `model.safetensors` with no index, as Hugging Face does.
 */
export function encodeShardedSafetensors(
  tensors: Record<string, F32Tensor>,
  maxShardBytes: number,
  metadata: Record<string, string> = { format: "pt" },
): SafetensorsLayout {
  if (!(maxShardBytes > 0)) {
    throw new Error(`safetensors shards: maxShardBytes must be > 0, got ${maxShardBytes}`);
  }
  const groups: Record<string, F32Tensor>[] = [];
  let current: Record<string, F32Tensor> = {};
  let size = 0;
  let total = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const n = tensorBytes(t);
    total += n;
    // An oversized tensor closes the shard before it, so shards keep the tensors' order.
    if ((n > maxShardBytes || size + n > maxShardBytes) && Object.keys(current).length) {
      groups.push(current);
      current = {};
      size = 0;
    }
    current[name] = t;
    size += n;
    if (n > maxShardBytes) {
      groups.push(current);
      current = {};
      size = 0;
    }
  }
  if (Object.keys(current).length || groups.length === 0) groups.push(current);
  if (groups.length === 1) {
    return { files: new Map([[SINGLE_FILE, encodeSafetensors(groups[0], metadata)]]), index: null };
  }
  const files = new Map<string, Uint8Array>();
  const weightMap: Record<string, string> = {};
  const k = String(groups.length).padStart(5, "0");
  groups.forEach((g, i) => {
    const file = `model-${String(i + 1).padStart(5, "0")}-of-${k}.safetensors`;
    files.set(file, encodeSafetensors(g, metadata));
    for (const name of Object.keys(g)) weightMap[name] = file;
  });
  const sorted = Object.fromEntries(Object.keys(weightMap).sort().map((n) => [n, weightMap[n]]));
  const index = JSON.stringify({ metadata: { total_size: total }, weight_map: sorted }, null, 2) + "\n";
  return { files, index };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
