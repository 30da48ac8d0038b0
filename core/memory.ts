/**
 * The only place that creates GPUBuffers and GPUTextures. Every allocation carries a category, so
 * `stats()` gives exact live and peak bytes per category (what was asked for, not what the pool
 * rounded to) plus the bytes the pool holds but nobody uses, like PyTorch's allocated/reserved.
 */

/** What an allocation holds; reports break memory down by these. */
export type Category = "weights" | "grads" | "optimizer" | "activations" | "workspace";

/** All categories, in report order. */
export const CATEGORIES: readonly Category[] = [
  "weights",
  "grads",
  "optimizer",
  "activations",
  "workspace",
];

/** Bytes per category. */
export type CategoryBytes = Record<Category, number>;

/** A live buffer handed out by {@link Memory.alloc}. */
export interface Allocation {
  /** The GPU buffer; it may be larger than `bytes` (pool size class). */
  readonly buffer: GPUBuffer;
  /** Bytes asked for: what the accounting counts. */
  readonly bytes: number;
  /** Current category (see {@link Memory.retag}). */
  category: Category;
  /** Name of what the buffer holds, for errors and timelines. */
  readonly label: string;
  /** Set once the allocation is freed; using it after that is a bug. */
  freed: boolean;
}

/** A live texture handed out by {@link Memory.allocTexture}. */
export interface TextureAllocation {
  /** The texture; rgba32float, 2-D. */
  readonly texture: GPUTexture;
  /** Bytes counted: width × height × 16. */
  readonly bytes: number;
  /** Current category. */
  category: Category;
  /** Name of what the texture holds. */
  readonly label: string;
  /** Set once freed. */
  freed: boolean;
}

/** Exact byte counts, from {@link Memory.stats}. */
export interface MemoryStats {
  /** Live bytes per category (bytes asked for by live allocations). */
  live: CategoryBytes;
  /** Sum of `live`. */
  liveTotal: number;
  /** Peak live bytes per category since the last {@link Memory.resetPeak}. */
  peak: CategoryBytes;
  /** Peak of `liveTotal` (not the sum of per-category peaks). */
  peakTotal: number;
  /** Bytes of GPU buffers and textures that back live allocations (size-class rounding included). */
  allocated: number;
  /** Bytes of pooled GPU objects that are free for reuse. */
  reserved: number;
  /** Peak of `allocated + reserved`: the most GPU memory this pool ever held. */
  peakReserved: number;
}

/** One entry of the memory timeline. */
export interface MemoryEvent {
  /** Sequence number of the event. */
  seq: number;
  /** What happened: buffer handed out, returned, moved to another category, or a user mark. */
  event: "alloc" | "free" | "retag" | "mark";
  /** The category it concerns (for retag: the new one). */
  category: Category | null;
  /** Bytes concerned (negative never; a free is a free). */
  bytes: number;
  /** Label of the allocation, or the mark's text. */
  label: string;
  /** Live bytes of all categories right after the event. */
  liveTotal: number;
}

const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC |
  GPUBufferUsage.COPY_DST;
const USAGE: Record<BufferKind, number> = {
  storage: STORAGE_USAGE,
  readback: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  query: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
};

/** Kind of buffer: device storage (all tensors), host-readable staging, or timestamp resolve. */
export type BufferKind = "storage" | "readback" | "query";

/**
 * Size class of a request: powers of two up to 1 MiB, then steps of an eighth of the power of two
 * below it, so rounding wastes at most 12.5% there and steady training steps reuse the same buffers.
 */
export function sizeClass(bytes: number): number {
  const b = Math.max(256, Math.ceil(bytes / 4) * 4);
  const pow = 2 ** Math.ceil(Math.log2(b));
  if (pow <= 1 << 20) return pow;
  const step = pow / 16;
  return Math.ceil(b / step) * step;
}

function zeroBytes(): CategoryBytes {
  return { weights: 0, grads: 0, optimizer: 0, activations: 0, workspace: 0 };
}

/** Pooled, categorized allocator over one GPUDevice. */
export class Memory {
  readonly #device: GPUDevice;
  readonly #maxBufferSize: number;
  readonly #pools = new Map<string, GPUBuffer[]>();
  readonly #texturePools = new Map<string, GPUTexture[]>();
  #live = zeroBytes();
  #peak = zeroBytes();
  #liveTotal = 0;
  #peakTotal = 0;
  #allocated = 0;
  #reserved = 0;
  #peakReserved = 0;
  #timeline: MemoryEvent[] | null = null;
  #seq = 0;

  /** Wraps `device`; buffers larger than `maxBufferSize` bytes are refused with a clear error. */
  constructor(device: GPUDevice, maxBufferSize: number) {
    this.#device = device;
    this.#maxBufferSize = maxBufferSize;
  }

  /** Hands out a buffer of at least `bytes` bytes, counted under `category`. */
  alloc(
    bytes: number,
    category: Category,
    label: string,
    kind: BufferKind = "storage",
  ): Allocation {
    if (!Number.isInteger(bytes) || bytes <= 0) {
      throw new Error(`memory: cannot allocate ${bytes} bytes for ${label}: size must be a positive integer`);
    }
    const size = sizeClass(bytes);
    if (size > this.#maxBufferSize) {
      throw new Error(
        `memory: ${label} needs ${bytes} bytes, beyond this device's maxBufferSize of ${this.#maxBufferSize} bytes`,
      );
    }
    const key = `${kind}:${size}`;
    let buffer = this.#pools.get(key)?.pop();
    if (buffer) {
      this.#reserved -= size;
    } else {
      buffer = this.#device.createBuffer({
        size,
        usage: USAGE[kind],
        label,
      });
    }
    this.#allocated += size;
    const a: Allocation = { buffer, bytes, category, label, freed: false };
    this.#add(category, bytes, "alloc", label);
    return a;
  }

  /** Returns an allocation's buffer to the pool; its bytes leave the live count. */
  free(a: Allocation): void {
    if (a.freed) throw new Error(`memory: ${a.label} freed twice`);
    a.freed = true;
    const size = a.buffer.size;
    const kind = (Object.keys(USAGE) as BufferKind[]).find((k) => USAGE[k] === a.buffer.usage)!;
    const key = `${kind}:${size}`;
    const pool = this.#pools.get(key) ?? [];
    pool.push(a.buffer);
    this.#pools.set(key, pool);
    this.#allocated -= size;
    this.#reserved += size;
    this.#add(a.category, -a.bytes, "free", a.label);
  }

  /**
   * A fresh upload buffer, mapped for writing, counted as workspace until {@link freeStaging}.
   * Never pooled: a mapped buffer cannot be reused while a recorded copy may still read it.
   */
  allocStaging(bytes: number, label: string): Allocation {
    const size = Math.ceil(bytes / 4) * 4;
    const buffer = this.#device.createBuffer({
      size,
      usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC,
      mappedAtCreation: true,
      label,
    });
    this.#allocated += size;
    this.#add("workspace", bytes, "alloc", label);
    return { buffer, bytes, category: "workspace", label, freed: false };
  }

  /** Destroys an upload buffer from {@link allocStaging}. */
  freeStaging(a: Allocation): void {
    if (a.freed) throw new Error(`memory: ${a.label} freed twice`);
    a.freed = true;
    this.#allocated -= a.buffer.size;
    a.buffer.destroy();
    this.#add(a.category, -a.bytes, "free", a.label);
  }

  /** Hands out an rgba32float 2-D texture (`width` × `height` texels), counted under `category`. */
  allocTexture(
    width: number,
    height: number,
    category: Category,
    label: string,
  ): TextureAllocation {
    const key = `${width}x${height}`;
    let texture = this.#texturePools.get(key)?.pop();
    const bytes = width * height * 16;
    if (texture) {
      this.#reserved -= bytes;
    } else {
      texture = this.#device.createTexture({
        size: [width, height],
        format: "rgba32float",
        usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_DST,
        label,
      });
    }
    this.#allocated += bytes;
    const t: TextureAllocation = { texture, bytes, category, label, freed: false };
    this.#add(category, bytes, "alloc", label);
    return t;
  }

  /** Returns a texture to its pool. */
  freeTexture(t: TextureAllocation): void {
    if (t.freed) throw new Error(`memory: texture ${t.label} freed twice`);
    t.freed = true;
    const key = `${t.texture.width}x${t.texture.height}`;
    const pool = this.#texturePools.get(key) ?? [];
    pool.push(t.texture);
    this.#texturePools.set(key, pool);
    this.#allocated -= t.bytes;
    this.#reserved += t.bytes;
    this.#add(t.category, -t.bytes, "free", t.label);
  }

  /** Moves a live allocation's bytes to another category (e.g. a fresh gradient becoming `.grad`). */
  retag(a: Allocation | TextureAllocation, category: Category): void {
    if (a.category === category) return;
    this.#add(a.category, -a.bytes, null, a.label);
    a.category = category;
    this.#add(category, a.bytes, "retag", a.label);
  }

  /** Exact live, peak, allocated and reserved bytes. */
  stats(): MemoryStats {
    return {
      live: { ...this.#live },
      liveTotal: this.#liveTotal,
      peak: { ...this.#peak },
      peakTotal: this.#peakTotal,
      allocated: this.#allocated,
      reserved: this.#reserved,
      peakReserved: this.#peakReserved,
    };
  }

  /** Starts a new peak window: peaks become the current live bytes. */
  resetPeak(): void {
    this.#peak = { ...this.#live };
    this.#peakTotal = this.#liveTotal;
    this.#peakReserved = this.#allocated + this.#reserved;
  }

  /** Starts (or restarts) recording the timeline of allocation events. */
  startTimeline(): void {
    this.#timeline = [];
  }

  /** Stops recording and returns the events recorded since {@link startTimeline}. */
  stopTimeline(): MemoryEvent[] {
    const t = this.#timeline ?? [];
    this.#timeline = null;
    return t;
  }

  /** Adds a labelled marker to the timeline (e.g. "step 3", "lisa switch"). */
  mark(label: string): void {
    this.#timeline?.push({
      seq: this.#seq++,
      event: "mark",
      category: null,
      bytes: 0,
      label,
      liveTotal: this.#liveTotal,
    });
  }

  /** Destroys every pooled free buffer and texture; `reserved` drops to 0. */
  trim(): void {
    for (const pool of this.#pools.values()) for (const b of pool) b.destroy();
    for (const pool of this.#texturePools.values()) for (const t of pool) t.destroy();
    this.#pools.clear();
    this.#texturePools.clear();
    this.#reserved = 0;
  }

  #add(
    category: Category,
    delta: number,
    event: MemoryEvent["event"] | null,
    label: string,
  ): void {
    this.#live[category] += delta;
    this.#liveTotal += delta;
    if (this.#live[category] > this.#peak[category]) this.#peak[category] = this.#live[category];
    if (this.#liveTotal > this.#peakTotal) this.#peakTotal = this.#liveTotal;
    const held = this.#allocated + this.#reserved;
    if (held > this.#peakReserved) this.#peakReserved = held;
    if (event && this.#timeline) {
      this.#timeline.push({
        seq: this.#seq++,
        event,
        category,
        bytes: Math.abs(delta),
        label,
        liveTotal: this.#liveTotal,
      });
    }
  }
}
