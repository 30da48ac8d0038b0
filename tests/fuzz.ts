/**
 * Seeded mutation of test inputs (byte flips, truncation, insertion, deletion, JSON value changes)
 * and the check every fuzzed loader must pass: it loads, or it throws one clean line naming the file.
 * Each mutant draws from its own seed, so a failure reproduces from the seed in its message alone.
 */
import { rng } from "./helpers.ts";

/** A seeded source of draws for one mutant. */
export class Draw {
  readonly #rand: () => number;

  /** Draws from mulberry32(`seed`). */
  constructor(readonly seed: number) {
    this.#rand = rng(seed);
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.#rand() * n);
  }

  /** One of `xs`. */
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.#rand() < p;
  }
}

/** A mutated input and what was done to it (for failure messages). */
export interface Mutant<T> {
  /** The mutated value. */
  value: T;
  /** The mutation, e.g. `flip bit 3 of byte 120`. */
  what: string;
}

/** Bytes that break parsers: JSON syntax, line breaks, NUL, UTF-8 lead and continuation bytes. */
const SPECIAL_BYTES = [
  0x00,
  0x0a,
  0x0d,
  0x22,
  0x2c,
  0x30,
  0x39,
  0x2d,
  0x5b,
  0x5d,
  0x7b,
  0x7d,
  0x5c,
  0x7f,
  0x80,
  0xbf,
  0xc0,
  0xe2,
  0xf0,
  0xff,
];

/** One byte-level mutation of `bytes` at a position in [`from`, `to`) (default: the whole input). */
export function mutateBytes(
  d: Draw,
  bytes: Uint8Array,
  from = 0,
  to = bytes.length,
): Mutant<Uint8Array> {
  const at = from + d.int(Math.max(1, to - from));
  const pos = Math.min(at, bytes.length);
  const op = d.int(6);
  if (op === 0 && bytes.length > 0) {
    const out = bytes.slice();
    const flips = 1 + d.int(4);
    for (let i = 0; i < flips; i++) out[Math.min(pos + d.int(8), out.length - 1)] ^= 1 << d.int(8);
    return { value: out, what: `flip ${flips} bit(s) near byte ${pos}` };
  }
  if (op === 1 && bytes.length > 0) {
    const out = bytes.slice();
    const b = d.pick(SPECIAL_BYTES);
    out[Math.min(pos, out.length - 1)] = b;
    return { value: out, what: `set byte ${pos} to 0x${b.toString(16)}` };
  }
  if (op === 2) return { value: bytes.slice(0, pos), what: `truncate to ${pos} bytes` };
  if (op === 3) {
    const n = 1 + d.int(8);
    const ins = Uint8Array.from({ length: n }, () => (d.chance(0.5) ? d.pick(SPECIAL_BYTES) : d.int(256)));
    return {
      value: concat(bytes.subarray(0, pos), ins, bytes.subarray(pos)),
      what: `insert ${n} byte(s) at ${pos}`,
    };
  }
  if (op === 4) {
    const n = 1 + d.int(16);
    return {
      value: concat(bytes.subarray(0, pos), bytes.subarray(pos + n)),
      what: `delete ${n} byte(s) at ${pos}`,
    };
  }
  const n = 1 + d.int(64);
  const src = d.int(Math.max(1, bytes.length));
  return {
    value: concat(bytes.subarray(0, pos), bytes.subarray(src, src + n), bytes.subarray(pos)),
    what: `copy ${n} byte(s) from ${src} to ${pos}`,
  };
}

/** JSON values that break loaders: wrong types, zero, negatives, fractions, huge and unsafe integers. */
const SPECIAL_VALUES: unknown[] = [
  0,
  -1,
  1,
  2.5,
  3,
  -0.5,
  2 ** 31,
  2 ** 53,
  2 ** 64,
  1e308,
  "",
  "x",
  "16",
  "F32",
  "I64",
  "line\nbreak",
  null,
  true,
  false,
  [],
  {},
  [0],
  [1, 2],
  [0, 2 ** 40],
  [2 ** 26, 2 ** 26, 2 ** 26],
  { a: 1 },
];

/** Literals that JSON.parse reads as non-finite, unsafe or invalid numbers (spliced in as text). */
const SPECIAL_NUMBER_TEXT = [
  "NaN",
  "Infinity",
  "1e999",
  "-1e999",
  "1e-400",
  "9007199254740993",
  "-0",
  "0x10",
  "1.",
  "01",
];

type Json = unknown;

/** A path to every node of `v` (the root is []). */
function paths(
  v: Json,
  at: (string | number)[] = [],
  out: (string | number)[][] = [],
): (string | number)[][] {
  out.push(at);
  if (Array.isArray(v)) v.forEach((x, i) => paths(x, [...at, i], out));
  else if (v && typeof v === "object") { for (const [k, x] of Object.entries(v)) paths(x, [...at, k], out); }
  return out;
}

function getAt(v: Json, path: (string | number)[]): Json {
  return path.reduce((node: Json, k) => (node as Record<string | number, Json>)[k], v);
}

/** One structural mutation of a JSON value: replace, delete, add or rename at a random node. */
export function mutateJson(d: Draw, value: Json): Mutant<Json> {
  const root = structuredClone(value);
  const all = paths(root);
  const path = d.pick(all);
  const where = path.length ? path.join(".") : "(root)";
  const op = d.int(4);
  if (path.length === 0) {
    const v = d.pick(SPECIAL_VALUES);
    return { value: v, what: `replace the root with ${JSON.stringify(v)}` };
  }
  const parent = getAt(root, path.slice(0, -1)) as Record<string | number, Json>;
  const key = path[path.length - 1];
  if (op === 1) {
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete parent[key];
    return { value: root, what: `delete ${where}` };
  }
  if (op === 2) {
    if (Array.isArray(parent)) parent.push(structuredClone(parent[key as number]));
    else parent[`${key}${d.pick(["_", ".0", "\n", ""])}x`] = d.pick(SPECIAL_VALUES);
    return { value: root, what: `add a sibling of ${where}` };
  }
  if (op === 3 && !Array.isArray(parent) && typeof key === "string") {
    const renamed = d.pick([key.toUpperCase(), `transformer.${key}`, key.replace(/\d/, "9"), ` ${key}`, ""]);
    const v = parent[key];
    delete parent[key];
    parent[renamed] = v;
    return { value: root, what: `rename ${where} to ${JSON.stringify(renamed)}` };
  }
  const v = d.pick(SPECIAL_VALUES);
  parent[key] = v;
  return { value: root, what: `set ${where} to ${JSON.stringify(v)}` };
}

/** `value` as JSON text, mutated either as a value or, one time in four, by splicing an odd number literal. */
export function mutateJsonText(d: Draw, value: Json): Mutant<string> {
  if (d.chance(0.25)) {
    const text = JSON.stringify(value);
    const numbers = [...text.matchAll(/-?\d+(\.\d+)?([eE][-+]?\d+)?/g)];
    if (numbers.length) {
      const m = d.pick(numbers);
      const lit = d.pick(SPECIAL_NUMBER_TEXT);
      return {
        value: text.slice(0, m.index) + lit + text.slice(m.index! + m[0].length),
        what: `replace the number ${m[0]} at ${m.index} with ${lit}`,
      };
    }
  }
  const m = mutateJson(d, value);
  return { value: JSON.stringify(m.value, null, d.chance(0.5) ? 1 : undefined) ?? "", what: m.what };
}

/** `a`, `b`, ... joined. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Tally of one kind of fuzzed input. */
export class FuzzTally {
  /** Mutants that loaded. */
  loaded = 0;
  /** Mutants rejected with a clean error. */
  rejected = 0;
  /** Mutants that failed the contract, with the seed and the mutation. */
  readonly crashes: string[] = [];
  /** Slowest single load in ms (a hang shows here long before the test times out). */
  slowestMs = 0;

  /** `kind` names the inputs in the summary line, e.g. `safetensors`. */
  constructor(readonly kind: string) {}

  /** Total inputs tried. */
  get total(): number {
    return this.loaded + this.rejected + this.crashes.length;
  }

  /**
   * Runs `load` on one mutant: it must resolve (then `check` its result) or throw an error whose
   * class is in `classes`, whose message is one line and names `file`.
   */
  async run<T>(
    label: string,
    file: string,
    load: () => Promise<T> | T,
    classes: readonly (abstract new (...args: never[]) => Error)[],
    check: (value: T) => Promise<void> | void = () => {},
  ): Promise<void> {
    const start = performance.now();
    let result: { ok: true; value: T } | { ok: false; error: unknown };
    try {
      result = { ok: true, value: await load() };
    } catch (error) {
      result = { ok: false, error };
    }
    this.slowestMs = Math.max(this.slowestMs, performance.now() - start);
    const problem = result.ok
      ? await checkResult(check, result.value)
      : cleanError(result.error, file, classes);
    if (problem) this.crashes.push(`${label}: ${problem}`);
    else if (result.ok) this.loaded++;
    else this.rejected++;
  }

  /** The line the README quotes: inputs tried, how they ended, crashes. */
  summary(): string {
    return `fuzz: ${this.total} ${this.kind} mutants, ${this.loaded} loaded, ${this.rejected} rejected, ` +
      `${this.crashes.length} crashes (slowest ${Math.round(this.slowestMs)} ms)`;
  }
}

async function checkResult<T>(check: (value: T) => Promise<void> | void, value: T): Promise<string | null> {
  try {
    await check(value);
    return null;
  } catch (e) {
    return `loaded, but the result is wrong: ${(e as Error).message}`;
  }
}

function cleanError(
  e: unknown,
  file: string,
  classes: readonly (abstract new (...args: never[]) => Error)[],
): string | null {
  if (!(e instanceof Error)) return `threw a non-Error ${String(e)}`;
  const name = e.constructor.name;
  if (!classes.some((c) => e.constructor === c)) return `threw ${name} (${e.message}) from ${e.stack}`;
  if (e.message.includes("\n")) return `${name} message is not one line: ${JSON.stringify(e.message)}`;
  if (!e.message.includes(file)) return `${name} message does not name ${file}: ${e.message}`;
  return null;
}
