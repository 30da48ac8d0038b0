/**
 * The only place that creates GPUBuffers and GPUTextures. Every allocation carries a category, so
 * `stats()` gives exact live and peak bytes per category (what was asked for, not what the pool
 * rounded to) plus the bytes the pool holds but nobody uses, like PyTorch's allocated/reserved.
 * A request it cannot serve (beyond `maxBufferSize`, over the memory limit, or refused by the device)
 * is a {@link GpuMemoryError} naming the allocation and what is live by category.
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

/** An allocation as errors name it. */
export interface AllocationInfo {
  /** Name of what it holds (a tensor's name). */
  readonly label: string;
  /** Its category. */
  readonly category: Category;
  /** Bytes asked for. */
  readonly bytes: number;
}

/** Which limit a {@link GpuMemoryError} hit. */
export type MemoryLimitKind = "maxBufferSize" | "memoryLimit" | "device";

/**
 * Raised when GPU memory cannot be had: one buffer beyond the device's `maxBufferSize`, the memory
 * limit (`LISA_MEMORY_LIMIT`, `requestGpu({ memoryLimit })`) exceeded even after releasing pooled
 * buffers, or the device itself out of memory (reported by its out-of-memory error scope at the
 * next submit). The message names the allocation, its category and bytes, and live bytes by category.
 */
export class GpuMemoryError extends Error {
  /** The limit hit. */
  readonly limit: MemoryLimitKind;
  /** The allocation refused or failed; null when the device ran out while running a step. */
  readonly allocation: AllocationInfo | null;
  /** For `device`: the buffers created since the previous submit, largest first. */
  readonly created: readonly AllocationInfo[];
  /** Live bytes per category when it happened. */
  readonly live: CategoryBytes;

  /** Wraps a complete message with the fields a caller may want to inspect. */
  constructor(
    message: string,
    fields: {
      limit: MemoryLimitKind;
      allocation: AllocationInfo | null;
      created?: readonly AllocationInfo[];
      live: CategoryBytes;
    },
  ) {
    super(message);
    this.name = "GpuMemoryError";
    this.limit = fields.limit;
    this.allocation = fields.allocation;
    this.created = fields.created ?? [];
    this.live = fields.live;
  }
}

/** `bytes` for people: `0`, `512 B`, `4.0 KiB`, `474.7 MiB`, `2.00 GiB`. */
export function formatBytes(bytes: number): string {
  if (bytes === 0) return "0";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 2 ** 20) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 2 ** 30) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

/** Options of a {@link Memory} beyond the device limit. */
export interface MemoryOptions {
  /**
   * Most bytes of GPU buffers and textures to hold at once (live and pooled); an allocation that
   * would pass it releases pooled free buffers first, then is refused with a {@link GpuMemoryError}.
   */
  limit?: number;
  /** Called before every allocation; throws when the device can no longer be used (lost). */
  assertUsable?: () => void;
  /**
   * Runs `destroy` once no recorded command can still use the object: a buffer freed mid-step may
   * be bound by commands not yet submitted, and destroying it would fail that submit. Default: now.
   */
  defer?: (destroy: () => void) => void;
}

interface Created extends AllocationInfo {
  readonly buffer: GPUBuffer | GPUTexture;
  readonly error: Promise<GPUError | null>;
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
  readonly #limit: number | undefined;
  readonly #assertUsable: () => void;
  readonly #defer: (destroy: () => void) => void;
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
  #created: Created[] = [];
  readonly #broken = new WeakSet<GPUBuffer | GPUTexture>();

  /**
   * Wraps `device`; buffers larger than `maxBufferSize` bytes, and allocations past `options.limit`,
   * are refused with a {@link GpuMemoryError}.
   */
  constructor(device: GPUDevice, maxBufferSize: number, options: MemoryOptions = {}) {
    this.#device = device;
    this.#maxBufferSize = maxBufferSize;
    this.#limit = options.limit;
    this.#assertUsable = options.assertUsable ?? (() => {});
    this.#defer = options.defer ?? ((destroy) => destroy());
  }

  /** The memory limit in bytes (live plus pooled), or undefined when only the device bounds it. */
  get limit(): number | undefined {
    return this.#limit;
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
    this.#assertUsable();
    const size = sizeClass(bytes);
    const info = { label, category, bytes };
    if (size > this.#maxBufferSize) {
      const max = this.#maxBufferSize;
      throw this.#refuse(
        "maxBufferSize",
        info,
        `beyond this device's maxBufferSize of ${formatBytes(max)} (${max} bytes)`,
      );
    }
    const key = `${kind}:${size}`;
    let buffer = this.#pools.get(key)?.pop();
    if (buffer) {
      this.#reserved -= size;
    } else {
      this.#makeRoom(size, info);
      buffer = this.#create(info, () => this.#device.createBuffer({ size, usage: USAGE[kind], label }));
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
    if (this.#broken.has(a.buffer)) {
      this.#destroy(a.buffer);
      this.#allocated -= size;
      this.#add(a.category, -a.bytes, "free", a.label);
      return;
    }
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
    this.#assertUsable();
    const size = Math.ceil(bytes / 4) * 4;
    const info: AllocationInfo = { label, category: "workspace", bytes };
    this.#makeRoom(size, info);
    const buffer = this.#create(info, () =>
      this.#device.createBuffer({
        size,
        usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC,
        mappedAtCreation: true,
        label,
      }));
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
    this.#assertUsable();
    const key = `${width}x${height}`;
    let texture = this.#texturePools.get(key)?.pop();
    const bytes = width * height * 16;
    if (texture) {
      this.#reserved -= bytes;
    } else {
      const info = { label, category, bytes };
      this.#makeRoom(bytes, info);
      texture = this.#create(info, () =>
        this.#device.createTexture({
          size: [width, height],
          format: "rgba32float",
          usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_DST,
          label,
        }));
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
    if (this.#broken.has(t.texture)) {
      this.#destroy(t.texture);
      this.#allocated -= t.bytes;
      this.#add(t.category, -t.bytes, "free", t.label);
      return;
    }
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

  /**
   * Destroys every pooled free buffer and texture (those a recorded step may still use, once it is
   * submitted); `reserved` drops to 0.
   */
  trim(): void {
    for (const pool of this.#pools.values()) for (const b of pool) this.#destroy(b);
    for (const pool of this.#texturePools.values()) for (const t of pool) this.#destroy(t);
    this.#pools.clear();
    this.#texturePools.clear();
    this.#reserved = 0;
  }

  /** One line for error messages: live bytes per category and the pool's free bytes. */
  describe(): string {
    const live = CATEGORIES.map((c) => `${c} ${formatBytes(this.#live[c])}`).join(", ");
    const limit = this.#limit === undefined ? "" : ` of a ${formatBytes(this.#limit)} limit`;
    return `live: ${live}; held ${formatBytes(this.#allocated + this.#reserved)}${limit}, ` +
      `${formatBytes(this.#reserved)} of it pooled free`;
  }

  /**
   * Waits for the device's verdict on every buffer and texture created since the last call and
   * returns them, largest first; rejects with a {@link GpuMemoryError} (limit `device`) naming the
   * first one the device could not back with memory, and the others created with it.
   */
  async check(): Promise<AllocationInfo[]> {
    const created = this.#created;
    this.#created = [];
    const errors = await Promise.all(created.map((c) => c.error));
    const list = created.map(({ label, category, bytes }) => ({ label, category, bytes }))
      .sort((a, b) => b.bytes - a.bytes);
    const failed = created.filter((_, i) => errors[i]);
    if (failed.length === 0) return list;
    for (const c of failed) this.#broken.add(c.buffer);
    const f = failed[0];
    throw this.outOfMemory(
      `creating ${f.label} (${f.category}, ${formatBytes(f.bytes)}): ${errors[created.indexOf(f)]!.message}`,
      list,
      { label: f.label, category: f.category, bytes: f.bytes },
    );
  }

  /**
   * The error for the device running out of memory `where` (e.g. `in a step of 12 dispatches`),
   * listing `created` (the allocations made since the previous submit) and live bytes by category.
   */
  outOfMemory(
    where: string,
    created: readonly AllocationInfo[],
    allocation: AllocationInfo | null = null,
  ): GpuMemoryError {
    const shown = created.slice(0, 8).map((a) => `${a.label} (${a.category}) ${formatBytes(a.bytes)}`);
    const rest = created.slice(8).reduce((s, a) => s + a.bytes, 0);
    if (created.length > 8) shown.push(`${created.length - 8} more (${formatBytes(rest)})`);
    return new GpuMemoryError(
      `GPU out of memory ${where}; created since the previous submit: ${shown.join(", ") || "nothing"}; ` +
        this.describe(),
      { limit: "device", allocation, created, live: { ...this.#live } },
    );
  }

  #refuse(limit: MemoryLimitKind, a: AllocationInfo, why: string): GpuMemoryError {
    return new GpuMemoryError(
      `memory: ${a.label} (${a.category}) needs ${
        formatBytes(a.bytes)
      } (${a.bytes} bytes), ${why}; ${this.describe()}`,
      { limit, allocation: a, live: { ...this.#live } },
    );
  }

  /** Keeps a new object of `size` bytes within the memory limit, releasing pooled free ones first. */
  #makeRoom(size: number, a: AllocationInfo): void {
    const limit = this.#limit;
    if (limit === undefined || this.#allocated + this.#reserved + size <= limit) return;
    if (this.#allocated + size > limit) {
      throw this.#refuse(
        "memoryLimit",
        a,
        `which would take the GPU memory in use to ${formatBytes(this.#allocated + size)}, ` +
          `over the memory limit of ${formatBytes(limit)} (${limit} bytes)`,
      );
    }
    // Largest first, so as few pooled objects as possible are given up.
    const pools: [number, (GPUBuffer | GPUTexture)[]][] = [
      ...[...this.#pools].map(([k, p]): [number, GPUBuffer[]] => [Number(k.split(":")[1]), p]),
      ...[...this.#texturePools].map(([k, p]): [number, GPUTexture[]] => {
        const [w, h] = k.split("x").map(Number);
        return [w * h * 16, p];
      }),
    ].sort((x, y) => y[0] - x[0]);
    for (const [bytes, pool] of pools) {
      while (pool.length && this.#allocated + this.#reserved + size > limit) {
        this.#destroy(pool.pop()!);
        this.#reserved -= bytes;
      }
    }
  }

  #destroy(object: GPUBuffer | GPUTexture): void {
    this.#defer(() => object.destroy());
  }

  /** Creates a GPU object inside an out-of-memory error scope whose verdict {@link check} awaits. */
  #create<T extends GPUBuffer | GPUTexture>(a: AllocationInfo, make: () => T): T {
    this.#device.pushErrorScope("out-of-memory");
    const object = make();
    // A lost device may reject the pop; that is reported as a lost device, not here.
    const error = this.#device.popErrorScope().catch(() => null);
    this.#created.push({ ...a, buffer: object, error });
    return object;
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
