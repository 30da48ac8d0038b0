/**
 * safetensors read/write: 8-byte little-endian header length, a JSON header mapping names to
 * {dtype, shape, data_offsets}, then the data. F32, F16 and BF16 are read (as f32) and written (from
 * f32, rounded to nearest even). Malformed files are rejected with one line naming the file, the key and the
 * offsets at fault. As the reference reader, the header is capped at 100 MB and tensors may not
 * overlap; unlike it, gaps and trailing bytes in the data section are allowed.
 */
import { getHost } from "../host.ts";

/** Element types we know the size of. */
export type SafeDType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

const DTYPE_BYTES: Record<SafeDType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** The reference implementation's cap on the JSON header, so a corrupt length cannot ask for more. */
export const MAX_HEADER_BYTES = 100_000_000;

/** One tensor's header entry. */
export interface SafeEntry {
  /** Element type as stored. */
  dtype: SafeDType;
  /** Dimensions. */
  shape: number[];
  /** Byte range [begin, end) within the data section. */
  offsets: [number, number];
}

/** Raised for a malformed file; the message names the problem. */
export class SafetensorsError extends Error {
  /** `where` names the file (or "buffer"). */
  constructor(where: string, message: string) {
    super(`safetensors ${where}: ${message}`);
    this.name = "SafetensorsError";
  }
}

/** A parsed file: entries by name, metadata, and f32 access to the data. */
export class Safetensors {
  /** Header entries by tensor name. */
  readonly entries: Map<string, SafeEntry>;
  /** The `__metadata__` strings. */
  readonly metadata: Record<string, string>;
  readonly #data: Uint8Array;
  readonly #where: string;

  /** Parses `bytes`; `where` names the source in errors. */
  constructor(bytes: Uint8Array, where = "buffer") {
    this.#where = where;
    const fail = (m: string) => new SafetensorsError(where, m);
    if (bytes.length < 8) throw fail(`file is ${bytes.length} bytes, shorter than the 8-byte header length`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const n = view.getBigUint64(0, true);
    // Compared as BigInt: a corrupt length up to 2^64 − 1 is rejected before anything is sized by it.
    if (n > BigInt(bytes.length - 8)) {
      throw fail(`header length ${n} runs past the end of the file (${bytes.length} bytes)`);
    }
    if (n > BigInt(MAX_HEADER_BYTES)) {
      throw fail(`header length ${n} is over the ${MAX_HEADER_BYTES}-byte limit`);
    }
    if (n === 0n) throw fail("header length is 0; the header is a JSON object, at least {}");
    const headerLen = Number(n);
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLen));
    } catch {
      throw fail("header is not valid UTF-8");
    }
    let header: unknown;
    try {
      header = JSON.parse(text);
    } catch (e) {
      throw fail(`header is not valid JSON (${oneLine((e as Error).message)})`);
    }
    if (!header || typeof header !== "object" || Array.isArray(header)) {
      throw fail("header is not a JSON object");
    }
    this.#data = bytes.subarray(8 + headerLen);
    this.entries = new Map();
    this.metadata = {};
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name === "__metadata__") {
        if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
          throw fail("__metadata__ is not an object");
        }
        for (const [k, v] of Object.entries(raw)) {
          if (typeof v !== "string") throw fail(`__metadata__.${label(k)} is not a string`);
          this.metadata[k] = v;
        }
        continue;
      }
      this.entries.set(name, this.#entry(name, raw));
    }
    // Empty tensors hold no bytes, so they overlap nothing wherever their offsets point.
    const sorted = [...this.entries].filter(([, e]) => e.offsets[1] > e.offsets[0])
      .sort((a, b) => a[1].offsets[0] - b[1].offsets[0]);
    for (let i = 1; i < sorted.length; i++) {
      const [pn, p] = sorted[i - 1];
      const [cn, c] = sorted[i];
      if (c.offsets[0] < p.offsets[1]) {
        throw fail(`tensors ${label(pn)} [${p.offsets}] and ${label(cn)} [${c.offsets}] overlap`);
      }
    }
  }

  #entry(name: string, raw: unknown): SafeEntry {
    const fail = (m: string) => new SafetensorsError(this.#where, `tensor ${label(name)}: ${m}`);
    if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw fail("entry is not an object");
    const { dtype, shape, data_offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== "string" || !Object.hasOwn(DTYPE_BYTES, dtype)) {
      throw fail(`unknown dtype ${describe(dtype)}`);
    }
    if (
      !Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)
    ) {
      throw fail(`shape ${describe(shape)} is not a list of non-negative integers below 2^53`);
    }
    if (
      !Array.isArray(data_offsets) || data_offsets.length !== 2 ||
      data_offsets.some((o) => !Number.isSafeInteger(o) || o < 0)
    ) {
      throw fail(`data_offsets ${describe(data_offsets)} is not a pair of non-negative integers below 2^53`);
    }
    const [begin, end] = data_offsets as [number, number];
    if (end < begin) throw fail(`data_offsets [${begin}, ${end}] end before they begin`);
    if (end > this.#data.length) {
      throw fail(`data_offsets [${begin}, ${end}] run past the data section (${this.#data.length} bytes)`);
    }
    // The product is exact while it stays within 2^53; beyond that it cannot fit the file anyway.
    const want = shape.reduce((p: number, d: number) => p * d, 1) * DTYPE_BYTES[dtype as SafeDType];
    if (want > this.#data.length) {
      throw fail(
        `shape ${
          describe(shape)
        } of ${dtype} needs ${want} bytes, more than the data section's ${this.#data.length}`,
      );
    }
    if (end - begin !== want) {
      throw fail(
        `shape [${shape}] of ${dtype} needs ${want} bytes but data_offsets [${begin}, ${end}] hold ${
          end - begin
        }`,
      );
    }
    return { dtype: dtype as SafeDType, shape: shape as number[], offsets: [begin, end] };
  }

  /** Tensor names in file order of their data. */
  names(): string[] {
    return [...this.entries.keys()];
  }

  /** The values of `name` as f32 (F32 copied, F16/BF16/F64 converted); throws for other dtypes. */
  getF32(name: string): Float32Array {
    const e = this.entries.get(name);
    if (!e) throw new SafetensorsError(this.#where, `no tensor named ${label(name)}`);
    const raw = this.#data.slice(e.offsets[0], e.offsets[1]);
    const dv = new DataView(raw.buffer);
    const n = raw.length / DTYPE_BYTES[e.dtype];
    const out = new Float32Array(n);
    switch (e.dtype) {
      case "F32":
        for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
        return out;
      case "F64":
        for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
        return out;
      case "F16":
        for (let i = 0; i < n; i++) out[i] = f16ToF32(dv.getUint16(i * 2, true));
        return out;
      case "BF16": {
        const u = new Uint32Array(out.buffer);
        for (let i = 0; i < n; i++) u[i] = dv.getUint16(i * 2, true) << 16;
        return out;
      }
      default:
        throw new SafetensorsError(
          this.#where,
          `tensor ${label(name)}: dtype ${e.dtype} cannot be read as f32`,
        );
    }
  }
}

/** `message` on one line: runs of whitespace (newlines included) become one space. */
export function oneLine(message: string): string {
  return message.replace(/\s+/g, " ").trim();
}

/** A value from a file for an error message: JSON, on one line, cut to about `max` characters. */
export function describe(value: unknown, max = 60): string {
  // Numbers as JavaScript prints them: JSON would print an overflowed 1e999 as null.
  const s = typeof value === "number" ? String(value) : escapeBreaks(JSON.stringify(value) ?? String(value));
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/** A key from a file for an error message: as is when plain, else quoted and escaped; cut when long. */
export function label(key: string, max = 120): string {
  // deno-lint-ignore no-control-regex
  const plain = key.length > 0 && !/[\u0000-\u001f\u007f-\u009f\u2028\u2029"]/.test(key);
  const s = plain ? key : escapeBreaks(JSON.stringify(key));
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

// JSON.stringify escapes \n and the other C0 controls, but leaves these, which some terminals break on.
function escapeBreaks(json: string): string {
  return json.replace(
    /[\u007f-\u009f\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** IEEE half → f32. */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** A tensor to write: shape, f32 values and the dtype to store them in (F32 when absent). */
export interface F32Tensor {
  /** Dimensions. */
  shape: readonly number[];
  /** Row-major values. */
  data: Float32Array;
  /** Stored element type; F32 when absent. Spelled out here so mod.ts needs no new export for it. */
  dtype?: "F32" | "F16" | "BF16";
}

/** The dtypes a tensor can be written in; values are f32 and rounded to nearest even on the way. */
export type WriteDType = NonNullable<F32Tensor["dtype"]>;

const F32_BITS = new Float32Array(1);
const U32_BITS = new Uint32Array(F32_BITS.buffer);

/** The BF16 bits of `x`: its top 16 f32 bits, rounded to nearest even; NaN stays a (quiet) NaN. */
export function f32ToBF16(x: number): number {
  F32_BITS[0] = x;
  const u = U32_BITS[0];
  // Adding 0x7fff plus the kept low bit would carry a NaN's payload into the exponent and sign.
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The IEEE half bits of `x`, rounded to nearest even: subnormals below 2^-14, Inf past 65504. */
export function f32ToF16(x: number): number {
  F32_BITS[0] = x;
  const u = U32_BITS[0];
  const sign = (u >>> 16) & 0x8000;
  const e = (u >>> 23) & 0xff;
  const m = u & 0x7fffff;
  if (e === 0xff) return sign | 0x7c00 | (m ? 0x200 | (m >>> 13) : 0);
  const exp = e - 127 + 15;
  if (exp >= 31) return sign | 0x7c00;
  if (exp <= 0) {
    // Below half the smallest subnormal (2^-25): every such value, ties included, rounds to ±0.
    if (exp < -10) return sign;
    const mant = m | 0x800000;
    const shift = 14 - exp;
    let q = mant >>> shift;
    const r = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (r > half || (r === half && (q & 1))) q++;
    return sign | q;
  }
  // A carry out of the mantissa steps the exponent, up to 0x7c00 (Inf): the right answer.
  let q = (exp << 10) | (m >>> 13);
  const r = m & 0x1fff;
  if (r > 0x1000 || (r === 0x1000 && (q & 1))) q++;
  return sign | q;
}

const WRITE_BYTES: Record<WriteDType, number> = { F32: 4, F16: 2, BF16: 2 };

/** Bytes `t` takes in a file, in its dtype. */
export function tensorBytes(t: F32Tensor): number {
  return t.data.length * WRITE_BYTES[t.dtype ?? "F32"];
}

/** Serializes tensors (in order, each in its dtype, F32 by default) and metadata to safetensors bytes. */
export function encodeSafetensors(
  tensors: Record<string, F32Tensor>,
  metadata: Record<string, string> = {},
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const n = t.shape.reduce((p, d) => p * d, 1);
    if (n !== t.data.length) {
      throw new Error(`safetensors: ${name} has ${t.data.length} values for shape [${t.shape}]`);
    }
    const dtype = t.dtype ?? "F32";
    if (!Object.hasOwn(WRITE_BYTES, dtype)) throw new Error(`safetensors: ${name} has dtype ${dtype}`);
    header[name] = { dtype, shape: [...t.shape], data_offsets: [offset, offset + tensorBytes(t)] };
    offset += tensorBytes(t);
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
  json += " ".repeat((8 - ((8 + new TextEncoder().encode(json).length) % 8)) % 8);
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  const dv = new DataView(out.buffer);
  for (const t of Object.values(tensors)) {
    const dtype = t.dtype ?? "F32";
    const n = t.data.length;
    if (dtype === "F32") { for (let i = 0; i < n; i++) dv.setFloat32(at + i * 4, t.data[i], true); }
    else if (dtype === "F16") {
      for (let i = 0; i < n; i++) dv.setUint16(at + i * 2, f32ToF16(t.data[i]), true);
    } else for (let i = 0; i < n; i++) dv.setUint16(at + i * 2, f32ToBF16(t.data[i]), true);
    at += tensorBytes(t);
  }
  return out;
}

/** Writes `bytes` to `path` atomically: a temporary file in the same folder, then a rename. */
export async function writeFileAtomic(path: string, bytes: Uint8Array | string): Promise<void> {
  const host = getHost();
  const tmp = `${path}.tmp-${host.pid}-${Date.now()}`;
  try {
    await host.writeFile(tmp, typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes);
    await host.rename(tmp, path);
  } catch (e) {
    await host.remove(tmp).catch(() => {});
    throw e;
  }
}

/** Reads and parses a .safetensors file. */
export async function readSafetensorsFile(path: string): Promise<Safetensors> {
  let bytes: Uint8Array;
  try {
    bytes = await getHost().readFile(path);
  } catch (e) {
    throw new SafetensorsError(path, `cannot read (${oneLine((e as Error).message)})`);
  }
  return new Safetensors(bytes, path);
}
