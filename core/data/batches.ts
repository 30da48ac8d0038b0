/**
 * Train/validation splits and batches. Training batches are drawn with the seeded `Rng` and can be
 * resumed exactly from `state()`; evaluation batches cover the data in order, once.
 */
import { Rng, type RngState } from "../random.ts";
import type { Example } from "./formats.ts";

/** B rows of T positions: row-major ids, next-token targets, and a loss mask (1 counts, 0 ignored). */
export interface Batch {
  /** Input ids, B*T. */
  ids: Uint32Array;
  /** The id that follows each input, B*T. */
  targets: Uint32Array;
  /** 1 where the target's loss counts, 0 where it is ignored (prompt, padding), B*T. */
  mask: Float32Array;
  /** Rows (B). */
  batchSize: number;
  /** Positions per row (T). */
  blockSize: number;
}

/** Contiguous chunks a stream is cut into before chunks are drawn for validation. */
export const SPLIT_CHUNKS = 64;

/** A stream split into training and validation tokens: a seeded `valFraction` of 64 contiguous chunks. */
export function splitTrainVal(
  tokens: Uint32Array,
  valFraction: number,
  seed: number,
): { train: Uint32Array; val: Uint32Array } {
  checkFraction(valFraction);
  if (tokens.length < 2) {
    throw new Error(`cannot split ${tokens.length} token(s) into training and validation: need at least 2`);
  }
  const chunks = Math.min(SPLIT_CHUNKS, tokens.length);
  const valChunks = new Set(new Rng(seed).sample(chunks, splitCount(chunks, valFraction)));
  const train: Uint32Array[] = [];
  const val: Uint32Array[] = [];
  for (let c = 0; c < chunks; c++) {
    const part = tokens.subarray(
      Math.round((c * tokens.length) / chunks),
      Math.round(((c + 1) * tokens.length) / chunks),
    );
    (valChunks.has(c) ? val : train).push(part);
  }
  return { train: concat(train), val: concat(val) };
}

/** Examples split into training and validation: a seeded `valFraction` of them, each side in file order. */
export function splitExamples(
  examples: readonly Example[],
  valFraction: number,
  seed: number,
): { train: Example[]; val: Example[] } {
  checkFraction(valFraction);
  if (examples.length < 2) {
    throw new Error(
      `cannot split ${examples.length} example(s) into training and validation: need at least 2`,
    );
  }
  const valIndices = new Set(new Rng(seed).sample(examples.length, splitCount(examples.length, valFraction)));
  return {
    train: examples.filter((_, i) => !valIndices.has(i)),
    val: examples.filter((_, i) => valIndices.has(i)),
  };
}

/** What `StreamBatcher.state()` returns: enough to continue with exactly the same batches. */
export interface StreamBatcherState {
  /** Which batcher the state belongs to. */
  kind: "stream";
  /** Stream length in tokens, to catch a state restored onto other data. */
  tokens: number;
  /** The generator that draws the next window starts. */
  rng: RngState;
}

/** Training batches of B random windows of T+1 tokens from one stream. */
export class StreamBatcher {
  /** The stream windows are drawn from. */
  readonly tokens: Uint32Array;
  /** Rows per batch (B). */
  readonly batchSize: number;
  /** Positions per row (T). */
  readonly blockSize: number;
  #rng: Rng;

  /** Batches of `batchSize` windows of `blockSize`+1 tokens, window starts drawn from `seed`. */
  constructor(tokens: Uint32Array, batchSize: number, blockSize: number, seed: number) {
    checkSizes(batchSize, blockSize);
    if (tokens.length < blockSize + 1) {
      throw new Error(
        `the token stream has ${tokens.length} tokens, fewer than block size + 1 = ${blockSize + 1}; ` +
          `use more data or a smaller block size`,
      );
    }
    this.tokens = tokens;
    this.batchSize = batchSize;
    this.blockSize = blockSize;
    this.#rng = new Rng(seed);
  }

  /** The next batch: each row a random window, targets the ids shifted by one, mask all 1. */
  next(): Batch {
    const { batchSize: B, blockSize: T } = this;
    const batch = emptyBatch(B, T);
    for (let b = 0; b < B; b++) {
      const start = this.#rng.int(this.tokens.length - T);
      batch.ids.set(this.tokens.subarray(start, start + T), b * T);
      batch.targets.set(this.tokens.subarray(start + 1, start + T + 1), b * T);
    }
    batch.mask.fill(1);
    return batch;
  }

  /** The position in the batch sequence, as JSON-serializable data. */
  state(): StreamBatcherState {
    return { kind: "stream", tokens: this.tokens.length, rng: this.#rng.state() };
  }

  /** Continues from `state`: the next batches are those that followed when it was taken. */
  restore(state: StreamBatcherState): void {
    if (state?.kind !== "stream" || state.tokens !== this.tokens.length) {
      throw new Error(
        `cannot restore a batcher state for ${
          describeState(state)
        } onto a stream of ${this.tokens.length} tokens`,
      );
    }
    this.#rng = Rng.fromState(state.rng);
  }
}

/** What `ExampleBatcher.state()` returns: enough to continue with exactly the same batches. */
export interface ExampleBatcherState {
  /** Which batcher the state belongs to. */
  kind: "examples";
  /** Number of examples, to catch a state restored onto other data. */
  examples: number;
  /** Completed passes over the examples. */
  epoch: number;
  /** Examples of this epoch's order already used. */
  position: number;
  /** The generator before it shuffled this epoch's order (the order is drawn again on restore). */
  rng: RngState;
}

/** Training batches of B examples in a seeded shuffled order, reshuffled each epoch. */
export class ExampleBatcher {
  /** The examples batches are drawn from. */
  readonly examples: readonly Example[];
  /** Rows per batch (B). */
  readonly batchSize: number;
  /** Positions per row (T). */
  readonly blockSize: number;
  #rng: Rng;
  #epochRng: RngState = [0, 0, 0, 0];
  #order: number[] = [];
  #position = 0;
  #epoch = 0;

  /** Batches of `batchSize` examples each cut or padded to `blockSize`+1 ids, order drawn from `seed`. */
  constructor(examples: readonly Example[], batchSize: number, blockSize: number, seed: number) {
    checkSizes(batchSize, blockSize);
    if (examples.length === 0) throw new Error("no examples to batch");
    examples.forEach((e, i) => {
      if (e.ids.length < 2) {
        throw new Error(
          `example ${i} has ${e.ids.length} token(s); it needs at least 2 (an input and a target)`,
        );
      }
    });
    this.examples = examples;
    this.batchSize = batchSize;
    this.blockSize = blockSize;
    this.#rng = new Rng(seed);
    this.#shuffle();
  }

  /** Completed passes over the examples. */
  get epoch(): number {
    return this.#epoch;
  }

  /** The next batch: the next B examples of the order (continuing into the next epoch's order). */
  next(): Batch {
    const batch = emptyBatch(this.batchSize, this.blockSize);
    for (let b = 0; b < this.batchSize; b++) {
      if (this.#position === this.#order.length) {
        this.#epoch++;
        this.#shuffle();
      }
      fillExampleRow(batch, b, this.examples[this.#order[this.#position++]]);
    }
    return batch;
  }

  /** The position in the batch sequence, as JSON-serializable data. */
  state(): ExampleBatcherState {
    return {
      kind: "examples",
      examples: this.examples.length,
      epoch: this.#epoch,
      position: this.#position,
      rng: [...this.#epochRng],
    };
  }

  /** Continues from `state`: the next batches are those that followed when it was taken. */
  restore(state: ExampleBatcherState): void {
    if (state?.kind !== "examples" || state.examples !== this.examples.length) {
      throw new Error(
        `cannot restore a batcher state for ${describeState(state)} onto ${this.examples.length} examples`,
      );
    }
    const n = this.examples.length;
    if (!Number.isSafeInteger(state.epoch) || state.epoch < 0) {
      throw new Error(`batcher state: epoch ${state.epoch} is not a whole number`);
    }
    if (!Number.isInteger(state.position) || state.position < 0 || state.position > n) {
      throw new Error(`batcher state: position ${state.position} is not in [0, ${n}]`);
    }
    this.#rng = Rng.fromState(state.rng);
    this.#shuffle();
    this.#epoch = state.epoch;
    this.#position = state.position;
  }

  #shuffle(): void {
    this.#epochRng = this.#rng.state();
    this.#order = this.#rng.shuffle(Array.from({ length: this.examples.length }, (_, i) => i));
    this.#position = 0;
  }
}

/** Number of evaluation windows of T+1 tokens in a stream of `tokenCount` tokens (a partial window is dropped). */
export function evalWindowCount(tokenCount: number, blockSize: number): number {
  return Math.floor(tokenCount / (blockSize + 1));
}

/** The stream as consecutive windows of T+1 tokens, B per batch (the last may have fewer rows). */
export function evalWindows(tokens: Uint32Array, blockSize: number, batchSize: number): Batch[] {
  checkSizes(batchSize, blockSize);
  const T = blockSize;
  const windows = evalWindowCount(tokens.length, T);
  if (windows === 0) {
    throw new Error(
      `the evaluation stream has ${tokens.length} tokens, fewer than block size + 1 = ${T + 1}; ` +
        `use more validation data or a smaller block size`,
    );
  }
  const batches: Batch[] = [];
  for (let first = 0; first < windows; first += batchSize) {
    const rows = Math.min(batchSize, windows - first);
    const batch = emptyBatch(rows, T);
    for (let b = 0; b < rows; b++) {
      const start = (first + b) * (T + 1);
      batch.ids.set(tokens.subarray(start, start + T), b * T);
      batch.targets.set(tokens.subarray(start + 1, start + T + 1), b * T);
    }
    batch.mask.fill(1);
    batches.push(batch);
  }
  return batches;
}

/** The examples in order, each cut or padded to T+1 ids, B per batch (the last may have fewer rows). */
export function evalExampleBatches(
  examples: readonly Example[],
  blockSize: number,
  batchSize: number,
): Batch[] {
  checkSizes(batchSize, blockSize);
  if (examples.length === 0) throw new Error("no examples to evaluate");
  const batches: Batch[] = [];
  for (let first = 0; first < examples.length; first += batchSize) {
    const rows = Math.min(batchSize, examples.length - first);
    const batch = emptyBatch(rows, blockSize);
    for (let b = 0; b < rows; b++) fillExampleRow(batch, b, examples[first + b]);
    batches.push(batch);
  }
  return batches;
}

/** Row `b` from an example's first T+1 ids; positions past its end keep pad id 0 and mask 0. */
function fillExampleRow(batch: Batch, b: number, example: Example): void {
  const T = batch.blockSize;
  const n = Math.min(example.ids.length, T + 1) - 1;
  const row = b * T;
  batch.ids.set(example.ids.subarray(0, n), row);
  batch.targets.set(example.ids.subarray(1, n + 1), row);
  for (let t = 0; t < n; t++) batch.mask[row + t] = example.mask[t + 1];
}

function emptyBatch(batchSize: number, blockSize: number): Batch {
  const n = batchSize * blockSize;
  return {
    ids: new Uint32Array(n),
    targets: new Uint32Array(n),
    mask: new Float32Array(n),
    batchSize,
    blockSize,
  };
}

function concat(parts: Uint32Array[]): Uint32Array {
  const out = new Uint32Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** How many of `n` items go to validation: the rounded fraction, at least 1, leaving at least 1. */
function splitCount(n: number, valFraction: number): number {
  return Math.min(n - 1, Math.max(1, Math.round(valFraction * n)));
}

function checkFraction(valFraction: number): void {
  if (!(valFraction > 0 && valFraction < 1)) {
    throw new Error(`validation fraction ${valFraction} must be between 0 and 1 (exclusive)`);
  }
}

function checkSizes(batchSize: number, blockSize: number): void {
  for (const [name, v] of [["batch size", batchSize], ["block size", blockSize]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${name} ${v} must be a positive integer`);
  }
}

function describeState(state: StreamBatcherState | ExampleBatcherState): string {
  if (typeof state !== "object" || state === null) return `no batcher state (${JSON.stringify(state)})`;
  return state.kind === "stream" ? `a stream of ${state.tokens} tokens` : `${state.examples} examples`;
}
