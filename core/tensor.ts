/**
 * Tensor: a shape, a GPU buffer from the memory pool, and autograd fields. Buffers are reference
 * counted: the owner's handle is one reference, and each tape node that saves the tensor for
 * backward holds another, so `dispose()` on an activation the tape still needs frees it only after
 * backward has used it. `tidy()` disposes everything created inside it except what it returns.
 */
import type { Gpu } from "./gpu.ts";
import type { Allocation, Category } from "./memory.ts";
import { fillKernel } from "../kernels/elementwise.ts";

/** Element types: f32 values, u32 token ids. */
export type DType = "f32" | "u32";

/** Options when creating a tensor. */
export interface TensorOptions {
  /** Whether gradients flow to it (a leaf parameter). Default false. */
  requiresGrad?: boolean;
  /** Memory category; default: the current one (activations, or workspace inside backward). */
  category?: Category;
  /** Name for errors and reports, e.g. `h.0.attn.c_attn.weight`. */
  name?: string;
  /** Element type; default f32. */
  dtype?: DType;
}

/** A tape entry: how to turn the gradient of an op's output into gradients of its inputs. */
export interface Node {
  /** Op name, for errors. */
  readonly op: string;
  /** Inputs, in the order `backward` returns their gradients. */
  readonly inputs: readonly Tensor[];
  /** Tensors kept alive for backward (each holds a reference until the node is freed). */
  saved: readonly Tensor[];
  /** Set once backward ran it or the tape was cleared; its saved tensors are gone then. */
  freed: boolean;
  /** Gradients of the inputs (null where an input needs none) from the output's gradient. */
  readonly backward: (grad: Tensor) => readonly (Tensor | null)[];
}

let outputCategory: Category = "activations";
const scopes: Tensor[][] = [];
let nextId = 1;

/** The category new op outputs get: `activations`, or `workspace` while backward runs. */
export function currentCategory(): Category {
  return outputCategory;
}

/** Runs `fn` with new tensors defaulting to `category`. */
export function withCategory<T>(category: Category, fn: () => T): T {
  const prev = outputCategory;
  outputCategory = category;
  try {
    return fn();
  } finally {
    outputCategory = prev;
  }
}

/** Number of elements of `shape`; throws naming `what` when a dimension is not a positive integer. */
export function shapeSize(shape: readonly number[], what: string): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d <= 0) {
      throw new Error(`${what}: shape [${shape.join(", ")}] has a dimension that is not a positive integer`);
    }
    n *= d;
  }
  return n;
}

/** An n-dimensional f32 (or u32) array in a GPU buffer. */
export class Tensor {
  /** The device it lives on. */
  readonly gpu: Gpu;
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Number of elements. */
  readonly size: number;
  /** Element type. */
  readonly dtype: DType;
  /** Name for errors and reports. */
  name: string;
  /** Whether gradients are computed for it. */
  requiresGrad: boolean;
  /** Accumulated gradient (category `grads`), for leaves that require grad. */
  grad: Tensor | null = null;
  /** The tape node that produced it; null for leaves and after backward consumed it. */
  node: Node | null = null;
  readonly #alloc: Allocation;
  /** Offset in elements into the buffer (non-zero only for views). */
  readonly #offset: number;
  /** The tensor a view shares its buffer with (it holds a reference to it). */
  readonly #parent: Tensor | null;
  #refs = 1;
  #disposed = false;

  /**
   * Allocates an uninitialized tensor; prefer {@link fromArray}, {@link zeros}, {@link empty}.
   * With `view`, shares `view.parent`'s buffer from element `view.offset` instead (see {@link rows}).
   */
  constructor(
    gpu: Gpu,
    shape: readonly number[],
    options: TensorOptions = {},
    view?: { parent: Tensor; offset: number },
  ) {
    const name = options.name ?? `t${nextId++}`;
    this.size = shapeSize(shape, `tensor ${name}`);
    this.gpu = gpu;
    this.shape = [...shape];
    this.dtype = options.dtype ?? "f32";
    this.name = name;
    this.requiresGrad = options.requiresGrad ?? false;
    if (view) {
      view.parent.retain();
      this.#alloc = view.parent.#alloc;
      this.#offset = view.parent.#offset + view.offset;
      this.#parent = view.parent;
    } else {
      this.#alloc = gpu.memory.alloc(this.size * 4, options.category ?? outputCategory, name);
      this.#offset = 0;
      this.#parent = null;
    }
    scopes.at(-1)?.push(this);
  }

  /**
   * A view of rows [r0, r1) of the first dimension, sharing this tensor's buffer (no copy, no
   * bytes in the accounting); not differentiable. Fused ops use it to process big tensors in chunks.
   */
  rows(r0: number, r1: number): Tensor {
    const n = this.shape[0];
    if (!(Number.isInteger(r0) && Number.isInteger(r1) && 0 <= r0 && r0 < r1 && r1 <= n)) {
      throw new Error(
        `tensor ${this.name} [${this.shape.join(", ")}]: rows(${r0}, ${r1}) is not a range within [0, ${n}]`,
      );
    }
    const per = this.size / n;
    return new Tensor(this.gpu, [r1 - r0, ...this.shape.slice(1)], {
      dtype: this.dtype,
      name: `${this.name}[${r0}:${r1}]`,
    }, { parent: this, offset: r0 * per });
  }

  /** A view with another shape of the same size, sharing this tensor's buffer; not differentiable. */
  view(shape: readonly number[]): Tensor {
    if (shapeSize(shape, `view of ${this.name}`) !== this.size) {
      throw new Error(
        `tensor ${this.name} [${this.shape.join(", ")}] cannot be viewed as [${shape.join(", ")}]`,
      );
    }
    return new Tensor(this.gpu, shape, { dtype: this.dtype, name: `${this.name}.view` }, {
      parent: this,
      offset: 0,
    });
  }

  /** Byte offset of its data in {@link buffer} (non-zero only for views). */
  get byteOffset(): number {
    return this.#offset * 4;
  }

  /** Bytes of data (4 per element). */
  get bytes(): number {
    return this.size * 4;
  }

  /** Its memory category. */
  get category(): Category {
    return this.#alloc.category;
  }

  /** True once its buffer went back to the pool. */
  get freed(): boolean {
    return this.#alloc.freed;
  }

  /** True once its owner disposed it (the buffer may live on while the tape needs it). */
  get disposed(): boolean {
    return this.#disposed;
  }

  /** The GPU buffer; throws if the tensor was freed. */
  get buffer(): GPUBuffer {
    if (this.#alloc.freed) throw new Error(`tensor ${this.name} used after it was freed`);
    return this.#alloc.buffer;
  }

  /** The buffer range to bind in `op`; throws naming op, tensor and limit if it cannot be bound. */
  binding(op: string): GPUBufferBinding {
    const limit = this.gpu.info.limits.maxStorageBufferBindingSize;
    if (this.bytes > limit) {
      throw new Error(
        `${op}: ${this.name} [${this.shape.join(", ")}] is ${this.bytes} bytes, beyond this device's ` +
          `maxStorageBufferBindingSize of ${limit} bytes`,
      );
    }
    const align = this.gpu.device.limits.minStorageBufferOffsetAlignment;
    if (this.byteOffset % align !== 0) {
      throw new Error(
        `${op}: view ${this.name} starts at byte ${this.byteOffset}, not a multiple of this device's minStorageBufferOffsetAlignment (${align})`,
      );
    }
    return { buffer: this.buffer, offset: this.byteOffset, size: this.bytes };
  }

  /** Moves its bytes to another memory category. */
  retag(category: Category): void {
    if (this.#parent) throw new Error(`tensor ${this.name}: a view cannot change category`);
    this.gpu.memory.retag(this.#alloc, category);
  }

  /** Adds a reference (the tape saving it). */
  retain(): void {
    if (this.#alloc.freed) throw new Error(`tensor ${this.name} retained after it was freed`);
    this.#refs++;
  }

  /** Drops a reference; the buffer returns to the pool when none is left. */
  release(): void {
    if (--this.#refs > 0) return;
    if (this.#parent) this.#parent.release();
    else this.gpu.memory.free(this.#alloc);
  }

  /** References held: 1 for the owner plus one per tape node saving it. */
  get refs(): number {
    return this.#refs;
  }

  /** Drops the owner's reference (once; later calls do nothing) and its gradient. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.zeroGrad();
    this.release();
  }

  /**
   * Takes over the owner's reference: `dispose()` becomes a no-op and the caller must `release()`.
   * Autograd does this for the gradients it holds.
   */
  own(): this {
    if (this.#disposed) throw new Error(`tensor ${this.name}: own() after dispose`);
    this.#disposed = true;
    return this;
  }

  /** Releases the gradient buffer (frozen or stepped parameters keep none). */
  zeroGrad(): void {
    this.grad?.release();
    this.grad = null;
  }

  /** Records a copy to host memory; resolves after the next submit has run. */
  async read(): Promise<Float32Array | Uint32Array> {
    const data = await this.gpu.read(this.buffer, this.byteOffset, this.bytes);
    return this.dtype === "u32" ? new Uint32Array(data) : new Float32Array(data);
  }

  /** Submits pending work and returns the values (one GPU round trip). */
  async download(): Promise<Float32Array> {
    if (this.dtype !== "f32") throw new Error(`tensor ${this.name}: download() is for f32; use read()`);
    const p = this.read();
    // If submit fails, p rejects with the same error: observe it so it is not reported twice.
    p.catch(() => {});
    await this.gpu.submit();
    return (await p) as Float32Array;
  }

  /** Overwrites the contents (ordered after everything already recorded). */
  upload(data: ArrayLike<number>): void {
    if (data.length !== this.size) {
      throw new Error(
        `tensor ${this.name} [${
          this.shape.join(", ")
        }]: upload of ${data.length} values, expected ${this.size}`,
      );
    }
    const arr = this.dtype === "u32" ? Uint32Array.from(data) : Float32Array.from(data);
    this.gpu.write(this.buffer, this.byteOffset, arr);
  }

  /** Records filling every element with `value`. */
  fill(value: number): void {
    if (value === 0) {
      this.gpu.clear(this.buffer, this.byteOffset, this.bytes);
      return;
    }
    this.gpu.dispatch(fillKernel(this.size, value), [this.binding("fill")]);
  }

  /** Shape and name, e.g. `Tensor(x [2, 3])`. */
  toString(): string {
    return `Tensor(${this.name} [${this.shape.join(", ")}])`;
  }
}

/** An uninitialized tensor of `shape` (contents are whatever the pooled buffer held). */
export function empty(gpu: Gpu, shape: readonly number[], options: TensorOptions = {}): Tensor {
  return new Tensor(gpu, shape, options);
}

/** A tensor holding `data` (row-major) with `shape`. */
export function fromArray(
  gpu: Gpu,
  data: ArrayLike<number>,
  shape: readonly number[],
  options: TensorOptions = {},
): Tensor {
  const t = new Tensor(gpu, shape, options);
  t.upload(data);
  return t;
}

/** A tensor of zeros. */
export function zeros(gpu: Gpu, shape: readonly number[], options: TensorOptions = {}): Tensor {
  const t = new Tensor(gpu, shape, options);
  t.fill(0);
  return t;
}

/** A tensor with every element `value`. */
export function full(
  gpu: Gpu,
  shape: readonly number[],
  value: number,
  options: TensorOptions = {},
): Tensor {
  const t = new Tensor(gpu, shape, options);
  t.fill(value);
  return t;
}

/** What `tidy` may return: tensors, plain values, and arrays or records of them. */
export type Kept =
  | Tensor
  | readonly Kept[]
  | { readonly [k: string]: Kept }
  | number
  | string
  | boolean
  | null
  | undefined;

function collect(x: unknown, out: Set<Tensor>): void {
  if (x instanceof Tensor) out.add(x);
  else if (Array.isArray(x)) { for (const v of x) collect(v, out); }
  else if (x && typeof x === "object") { for (const v of Object.values(x)) collect(v, out); }
}

/**
 * Runs `fn`, then disposes every tensor created inside it except those in its result (which move
 * to the enclosing scope). Tensors the tape saved for backward stay alive until backward used them.
 */
export function tidy<T extends Kept | void>(fn: () => T): T {
  const scope: Tensor[] = [];
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  const keep = new Set<Tensor>();
  collect(result, keep);
  for (const t of scope) {
    if (keep.has(t)) scopes.at(-1)?.push(t);
    else t.dispose();
  }
  return result;
}

/** Removes `t` from the current tidy scope so it outlives it (e.g. a parameter made in a scope). */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) {
    const i = s.indexOf(t);
    if (i >= 0) s.splice(i, 1);
  }
  return t;
}
