/**
 * Adapter and device (with the adapter's real limits), adapter report, and the step recorder: every
 * kernel dispatched between two submits goes into one command encoder (one compute pass while no copy
 * intervenes), so a training step costs one submit. Readback is explicit and async.
 *
 * Faults are errors that say what happened: a step the device rejects is a {@link GpuStepError}
 * naming its kernels (the exact one in debug mode), memory that cannot be had a
 * {@link GpuMemoryError}, and once the device is lost every submit, read, allocation and wait
 * rejects with {@link GpuLostError} instead of hanging or returning stale numbers.
 */
import { checkLoops, type Kernel } from "../kernels/kernel.ts";
import { KernelCompileError, type Pipeline, PipelineCache } from "../kernels/cache.ts";
import {
  isSoftwareAdapter,
  type KernelFamily,
  type KernelFamilySetting,
  parseKernelFamily,
  resolveKernelFamily,
} from "../kernels/select.ts";
import { type Allocation, GpuMemoryError, Memory } from "./memory.ts";
import { getHost } from "./host.ts";

/** Native backends Deno's WebGPU (wgpu) can use. */
export type Backend = "vulkan" | "gl" | "metal" | "dx12";

/** Options for {@link requestGpu}. */
export interface GpuOptions {
  /**
   * Backend to use; else `DENO_WEBGPU_BACKEND`, else wgpu's default order. It can only be chosen
   * before the first adapter request of the process.
   */
  backend?: Backend;
  /** Passed to `requestAdapter`. */
  powerPreference?: GPUPowerPreference;
  /**
   * Time every dispatch with timestamp queries (each dispatch gets its own compute pass, so this
   * slows steps a little); read the totals with {@link Gpu.takeProfile}.
   */
  profile?: boolean;
  /**
   * Kernel family: `gpu` (workgroup tiles and reductions), `software` (texture reads, no barriers)
   * or `auto` (software exactly on a software adapter); else `LISA_KERNELS`, else auto.
   */
  kernels?: KernelFamilySetting;
  /**
   * Debug mode: every recorded command gets its own error scope (and command buffer, still one
   * submit per step), so a rejected step names the exact kernel; else `LISA_GPU_DEBUG=1`.
   */
  debug?: boolean;
  /**
   * Most bytes of GPU memory (live and pooled buffers) this device may hold; an allocation past it
   * is refused with a {@link GpuMemoryError} after pooled free buffers are released. Else
   * `LISA_MEMORY_LIMIT` (bytes, or with a unit: `512MiB`, `6GiB`); else only the device bounds it.
   */
  memoryLimit?: number;
}

/** Accumulated GPU time of one kernel family under profiling. */
export interface KernelTime {
  /** Kernel name (e.g. `matmul_packed_outer`). */
  kernel: string;
  /** Dispatches timed. */
  count: number;
  /** Total GPU milliseconds. */
  ms: number;
}

/** What a report needs to say about the adapter. */
export interface AdapterReport {
  /** Driver's description, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`. */
  description: string;
  /** Vendor id or name as the driver reports it. */
  vendor: string;
  /** Architecture, if reported. */
  architecture: string;
  /** Backend asked for (`DENO_WEBGPU_BACKEND` or the option), or `default` when none was. */
  backend: string;
  /** True for a software/fallback adapter (llvmpipe, lavapipe, SwiftShader, WARP). */
  fallback: boolean;
  /** True when the adapter offers `shader-f16`. */
  f16: boolean;
  /** Subgroup size when the device was granted the `subgroups` feature, else 0. */
  subgroupSize: number;
  /** The kernel family this device runs (see kernels/select.ts). */
  kernels: KernelFamily;
  /** The limits that bound what we can run, as granted to our device. */
  limits: {
    maxBufferSize: number;
    maxStorageBufferBindingSize: number;
    maxComputeWorkgroupStorageSize: number;
    maxComputeInvocationsPerWorkgroup: number;
    maxStorageBuffersPerShaderStage: number;
    maxTextureDimension2D: number;
  };
}

/** A buffer range or texture view bound to a kernel, in binding-index order. */
export type Binding = GPUBufferBinding | GPUTextureView;

/** Raised when there is no WebGPU adapter; says how to get one. */
export class NoAdapterError extends Error {
  /** Builds the message with install hints. */
  constructor(detail: string) {
    super(
      `No WebGPU adapter found (${detail}).\n` +
        "Without a GPU, install Mesa's software Vulkan driver: `apt-get install -y mesa-vulkan-drivers libvulkan1`\n" +
        "(or use DENO_WEBGPU_BACKEND=gl with Mesa's OpenGL); with a GPU, install its Vulkan/Metal/DX12 driver.",
    );
    this.name = "NoAdapterError";
  }
}

/**
 * Raised when the device rejects the commands of a step (a validation error). Names the step's
 * kernels; in debug mode the exact kernel that failed. The step did not run: its reads reject.
 */
export class GpuStepError extends Error {
  /** The kernel (`name[key]`) or command that failed when known (debug mode), else null. */
  readonly kernel: string | null;
  /** The step's kernels, in order (the first 64). */
  readonly kernels: readonly string[];

  /** Wraps a complete message; `kernel` is the failing kernel where known. */
  constructor(message: string, kernels: readonly string[], kernel: string | null = null) {
    super(message);
    this.name = "GpuStepError";
    this.kernels = kernels;
    this.kernel = kernel;
  }
}

/**
 * Raised by every submit, read, allocation, dispatch and wait once the device is lost (a driver
 * reset, a GPU fault, or `device.destroy()`): its buffers are gone, so the run cannot go on.
 */
export class GpuLostError extends Error {
  /** WebGPU's reason: `destroyed` or `unknown`. */
  readonly reason: string;
  /** The driver's message. */
  readonly detail: string;

  /** Builds the message from the device's lost info. */
  constructor(reason: string, detail: string) {
    super(
      `GPU device lost (${reason}: ${detail}); its memory is gone and nothing more can run on it: ` +
        "restart from the last checkpoint",
    );
    this.name = "GpuLostError";
    this.reason = reason;
    this.detail = detail;
  }
}

/**
 * True for the errors that mean the GPU could not run what was asked: {@link GpuStepError},
 * {@link GpuLostError}, {@link GpuMemoryError} and `KernelCompileError`.
 */
export function isGpuFault(
  e: unknown,
): e is GpuStepError | GpuLostError | GpuMemoryError | KernelCompileError {
  return e instanceof GpuStepError || e instanceof GpuLostError || e instanceof GpuMemoryError ||
    e instanceof KernelCompileError;
}

/** Options of a {@link Gpu} beyond its device and adapter report. */
export interface GpuDeviceOptions {
  /** Time every dispatch (needs the timestamp-query feature); see {@link GpuOptions.profile}. */
  profile?: boolean;
  /** One error scope per recorded command; see {@link GpuOptions.debug}. */
  debug?: boolean;
  /** Memory limit in bytes; see {@link GpuOptions.memoryLimit}. */
  memoryLimit?: number;
}

const LIMIT_NAMES = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "maxStorageTexturesPerShaderStage",
  "maxBindingsPerBindGroup",
  "maxTextureDimension2D",
] as const;

interface PendingRead {
  alloc: Allocation;
  bytes: number;
  resolve: (data: ArrayBuffer) => void;
  reject: (e: unknown) => void;
}

/** A command recorded in debug mode, with the verdict of its own error scope. */
interface Recorded {
  what: string;
  where: string;
  kernel: string | null;
  error: Promise<GPUError | null>;
}

/** A device with its memory pool, pipeline cache and step recorder. */
export class Gpu {
  /** The WebGPU device. */
  readonly device: GPUDevice;
  /** The adapter report. */
  readonly info: AdapterReport;
  /** The only allocator of buffers and textures on this device. */
  readonly memory: Memory;
  /** Compiled kernels. */
  readonly pipelines: PipelineCache;
  /** The kernel family chosen for this device: the only input ops give kernels/select.ts about it. */
  readonly kernels: KernelFamily;
  readonly #debug: boolean;
  #open = false;
  #encoder: GPUCommandEncoder | null = null;
  #commands: GPUCommandBuffer[] = [];
  #recorded: Recorded[] = [];
  #pass: GPUComputePassEncoder | null = null;
  #reads: PendingRead[] = [];
  #afterSubmit: (() => void)[] = [];
  #labels: string[] = [];
  #dispatches = 0;
  #submits = 0;
  #readbacks = 0;
  #lost: { reason: string; message: string } | null = null;
  readonly #lostWaiters = new Set<(e: GpuLostError) => void>();
  #querySet: GPUQuerySet | null = null;
  #queryNames: string[] = [];
  #profile = new Map<string, KernelTime>();
  #profileReads: Promise<void>[] = [];

  /** Wraps a device; use {@link requestGpu} to get one. `profile` needs the timestamp-query feature. */
  constructor(device: GPUDevice, info: AdapterReport, options: GpuDeviceOptions = {}) {
    this.device = device;
    this.info = info;
    this.#debug = options.debug ?? false;
    if (options.profile) {
      if (!device.features.has("timestamp-query")) {
        throw new Error("profiling needs the adapter's timestamp-query feature, which this adapter lacks");
      }
      this.#querySet = device.createQuerySet({ type: "timestamp", count: PROFILE_QUERIES });
    }
    this.memory = new Memory(device, info.limits.maxBufferSize, {
      limit: options.memoryLimit,
      assertUsable: () => this.#alive(),
      defer: (destroy) => this.#open ? this.#afterSubmit.push(destroy) : destroy(),
    });
    this.pipelines = new PipelineCache(device);
    this.kernels = info.kernels;
    device.lost.then((i) => {
      this.#lost = { reason: i.reason ?? "unknown", message: i.message };
      for (const reject of this.#lostWaiters) reject(this.#lostError());
      this.#lostWaiters.clear();
      for (const r of this.#reads.splice(0)) {
        this.memory.free(r.alloc);
        r.reject(this.#lostError());
      }
    });
  }

  /** True when each recorded command gets its own error scope (see {@link GpuOptions.debug}). */
  get debug(): boolean {
    return this.#debug;
  }

  /**
   * The error to report for `e`, thrown by work on this device: a {@link GpuLostError} when the
   * device is lost or turns out lost within `waitMs` (a loss is reported asynchronously, so the
   * first error after it is often a plain WebGPU one, such as an invalid buffer), else `e`.
   */
  async explain(e: unknown, waitMs = 200): Promise<unknown> {
    if (isGpuFault(e)) return e;
    if (!this.#lost) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      let waiter: ((e: GpuLostError) => void) | null = null;
      await new Promise<void>((resolve) => {
        waiter = () => resolve();
        this.#lostWaiters.add(waiter);
        timer = setTimeout(resolve, waitMs);
      });
      clearTimeout(timer);
      this.#lostWaiters.delete(waiter!);
    }
    return this.#lost ? this.#lostError() : e;
  }

  /** The loss's reason and message once the device is lost, else null. */
  get lost(): { reason: string; message: string } | null {
    return this.#lost;
  }

  /** True when dispatches are timed (see {@link takeProfile}). */
  get profiling(): boolean {
    return this.#querySet !== null;
  }

  /** Dispatches since the last submit (the step's dispatch count). */
  get pendingDispatches(): number {
    return this.#dispatches;
  }

  /** Submits made so far on this device. */
  get submits(): number {
    return this.#submits;
  }

  /** Host reads (each a wait of ≥ 10 ms in Deno) settled or pending so far on this device. */
  get readbacks(): number {
    return this.#readbacks;
  }

  /**
   * Records `kernel` over `workgroups` (default: the kernel's own) with `bindings` (binding 0, 1,
   * ... of group 0).
   */
  dispatch(
    kernel: Kernel,
    bindings: readonly Binding[],
    workgroups: readonly [number, number?, number?] | undefined = kernel.workgroups,
  ): void {
    if (!workgroups) {
      throw new Error(`dispatch: kernel ${kernel.name} [${kernel.key}] needs workgroup counts`);
    }
    checkLoops(kernel);
    this.#alive();
    const p: Pipeline = this.pipelines.get(kernel);
    const label = `${kernel.name}[${kernel.key}]`;
    // The bind group is created inside the step's (or, in debug mode, the kernel's) error scope.
    const encode = (pass: GPUComputePassEncoder) => {
      pass.setPipeline(p.pipeline);
      pass.setBindGroup(
        0,
        this.device.createBindGroup({
          label,
          layout: p.layout,
          entries: bindings.map((resource, binding) => ({ binding, resource })),
        }),
      );
      pass.dispatchWorkgroups(workgroups[0], workgroups[1] ?? 1, workgroups[2] ?? 1);
    };
    const timestampWrites = this.#timestamps(kernel.name);
    if (this.#debug) {
      this.#record(`kernel ${label}`, (enc) => {
        const pass = enc.beginComputePass(timestampWrites ? { label, timestampWrites } : { label });
        encode(pass);
        pass.end();
      }, label);
    } else {
      if (timestampWrites) {
        this.#endPass();
        this.#pass = this.#enc().beginComputePass({ timestampWrites });
      }
      encode(this.#computePass());
    }
    this.#dispatches++;
    if (this.#labels.length < 64) this.#labels.push(label);
  }

  /** Records a buffer-to-buffer copy of `bytes` bytes. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.#record(
      `copy of ${bytes} bytes`,
      (enc) => enc.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes),
    );
  }

  /**
   * Records a copy of `rows` rows of `bytesPerRow` bytes from `src` (at byte `offset`) into texels
   * [0, width) of texture rows [y, y + rows).
   */
  copyToTexture(
    src: GPUBuffer,
    offset: number,
    bytesPerRow: number,
    texture: GPUTexture,
    y: number,
    width: number,
    rows: number,
  ): void {
    // One row needs no row pitch (and then no 256-byte alignment of it).
    const layout = rows === 1
      ? { buffer: src, offset }
      : { buffer: src, offset, bytesPerRow, rowsPerImage: rows };
    this.#record(
      `copy of ${rows} rows into a ${texture.width}×${texture.height} texture`,
      (enc) => enc.copyBufferToTexture(layout, { texture, origin: [0, y] }, [width, rows]),
    );
  }

  /** Records zeroing `bytes` bytes (a multiple of 4) of `buffer`. */
  clear(buffer: GPUBuffer, offset: number, bytes: number): void {
    this.#record(
      `clear of ${bytes} bytes`,
      (enc) => enc.clearBuffer(buffer, offset, Math.ceil(bytes / 4) * 4),
    );
  }

  /**
   * Writes `data` into `dst` at `offset`, ordered after everything recorded so far. With nothing
   * recorded this is `queue.writeBuffer`; otherwise it goes through a staging copy, because a
   * queue write would land before the recorded commands that may still read the old contents.
   */
  write(dst: GPUBuffer, offset: number, data: ArrayBufferView<ArrayBuffer>): void {
    const bytes = data.byteLength;
    if (bytes % 4 !== 0) throw new Error(`gpu.write: ${bytes} bytes is not a multiple of 4`);
    this.#alive();
    if (!this.#open) {
      this.device.queue.writeBuffer(dst, offset, data.buffer, data.byteOffset, bytes);
      return;
    }
    const staging = this.memory.allocStaging(bytes, "upload");
    new Uint8Array(staging.buffer.getMappedRange()).set(
      new Uint8Array(data.buffer, data.byteOffset, bytes),
    );
    staging.buffer.unmap();
    this.copy(staging.buffer, 0, dst, offset, bytes);
    this.#afterSubmit.push(() => this.memory.freeStaging(staging));
  }

  /**
   * Records a copy of `bytes` bytes of `src` into a host-readable buffer; the promise resolves with
   * them once the step is submitted and the GPU has finished it. Nothing waits until then. It
   * rejects, never resolving with stale data, when the step fails or the device is lost.
   */
  read(src: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    const size = Math.ceil(bytes / 4) * 4;
    const alloc = this.memory.alloc(size, "workspace", "readback", "readback");
    this.copy(src, offset, alloc.buffer, 0, size);
    return new Promise((resolve, reject) => this.#reads.push({ alloc, bytes, resolve, reject }));
  }

  /**
   * Submits everything recorded since the last submit as one queue submit, after checking new
   * pipelines compiled and new buffers got memory. Rejects with {@link KernelCompileError},
   * {@link GpuMemoryError}, {@link GpuStepError} or {@link GpuLostError}; the step's reads reject too.
   */
  async submit(): Promise<void> {
    this.#alive();
    const [compileError, memory] = await this.#bounded(Promise.all([
      this.pipelines.check().then(() => null, (e: Error) => e),
      this.memory.check().then(
        (created) => ({ created, error: null }),
        (e: GpuMemoryError) => ({ created: e.created, error: e }),
      ),
    ]));
    // A step that uses a kernel which failed to compile, or a buffer the device could not back, is
    // dropped whole, not half-run.
    const dropped = memory.error ?? compileError;
    if (!this.#open) {
      if (dropped) throw dropped;
      return;
    }
    this.#endPass();
    if (this.#querySet && this.#queryNames.length) this.#resolveProfile();
    if (this.#encoder) this.#commands.push(this.#encoder.finish());
    const labels = this.#labels, dispatches = this.#dispatches, recorded = this.#recorded;
    if (!dropped) {
      this.device.queue.submit(this.#commands);
      this.#submits++;
    }
    this.#encoder = null;
    this.#commands = [];
    this.#recorded = [];
    this.#labels = [];
    this.#dispatches = 0;
    this.#open = false;
    const scopes = [this.device.popErrorScope(), this.device.popErrorScope()];
    // Submitted commands keep what they use alive, so these buffers may go now.
    for (const f of this.#afterSubmit.splice(0)) f();
    const [oom, invalid, ...verdicts] = await this.#bounded(
      Promise.all([...scopes, ...recorded.map((r) => r.error)]),
    );
    const bad = recorded.find((_, i) => verdicts[i]);
    const step = `a step of ${dispatches} dispatches (${labels.slice(0, 8).join(", ")}${
      labels.length > 8 ? ", ..." : ""
    })`;
    const failure = dropped ??
      (oom && this.memory.outOfMemory(`running ${step}: ${oom.message}`, memory.created)) ??
      (bad && new GpuStepError(
        `GPU rejected ${bad.what} (${bad.where} of ${step}): ${verdicts[recorded.indexOf(bad)]!.message}`,
        labels,
        bad.kernel,
      )) ??
      (invalid && new GpuStepError(
        `GPU rejected ${step}: ${invalid.message}` +
          (this.#debug
            ? ""
            : "; rerun with LISA_GPU_DEBUG=1 (or requestGpu({ debug: true })) to name the kernel"),
        labels,
      ));
    if (failure) {
      for (const r of this.#reads.splice(0)) {
        this.memory.free(r.alloc);
        r.reject(failure);
      }
      throw failure;
    }
    this.#settleReads();
  }

  /**
   * GPU time per kernel family since the last call (profiling mode only), slowest first. Waits for
   * the submitted steps' timestamps.
   */
  async takeProfile(): Promise<KernelTime[]> {
    await Promise.all(this.#profileReads.splice(0));
    const out = [...this.#profile.values()].sort((a, b) => b.ms - a.ms);
    this.#profile.clear();
    return out;
  }

  #resolveProfile(): void {
    const names = this.#queryNames;
    this.#queryNames = [];
    const bytes = names.length * 16;
    const resolve = this.memory.alloc(bytes, "workspace", "timestamps", "query");
    const querySet = this.#querySet!;
    this.#record(
      "timestamp resolve",
      (enc) => enc.resolveQuerySet(querySet, 0, names.length * 2, resolve.buffer, 0),
    );
    const read = this.read(resolve.buffer, 0, bytes);
    this.#afterSubmit.push(() => this.memory.free(resolve));
    // A failed step rejects its read; submit reports that failure, so the profile just skips it.
    this.#profileReads.push(read.then((data) => {
      const t = new BigUint64Array(data);
      names.forEach((name, i) => {
        const e = this.#profile.get(name) ?? { kernel: name, count: 0, ms: 0 };
        e.count++;
        e.ms += Number(t[2 * i + 1] - t[2 * i]) / 1e6;
        this.#profile.set(name, e);
      });
    }, () => {}));
  }

  /**
   * Resolves when the GPU has finished all submitted work (costs a round trip: ≥ 10 ms here);
   * rejects with {@link GpuLostError} if the device is or gets lost.
   */
  async idle(): Promise<void> {
    await this.#bounded(this.device.queue.onSubmittedWorkDone());
  }

  #settleReads(): void {
    for (const r of this.#reads.splice(0)) {
      this.#readbacks++;
      this.#bounded(r.alloc.buffer.mapAsync(GPUMapMode.READ)).then(() => {
        const data = r.alloc.buffer.getMappedRange(0, Math.ceil(r.bytes / 4) * 4).slice(0, r.bytes);
        r.alloc.buffer.unmap();
        this.memory.free(r.alloc);
        r.resolve(data);
      }, (e) => {
        this.memory.free(r.alloc);
        r.reject(e);
      });
    }
  }

  /** The lost-device error to throw now. */
  #lostError(): GpuLostError {
    return new GpuLostError(this.#lost!.reason, this.#lost!.message);
  }

  /** Throws {@link GpuLostError} once the device is lost. */
  #alive(): void {
    if (this.#lost) throw this.#lostError();
  }

  /**
   * `p`, or a {@link GpuLostError} as soon as the device is lost: a lost device may never settle
   * a map or a work-done promise. (A waiter set, not `Promise.race` with `device.lost`, which would
   * keep every settled value reachable from a promise that never resolves.)
   */
  #bounded<T>(p: Promise<T>): Promise<T> {
    if (this.#lost) {
      p.catch(() => {});
      return Promise.reject(this.#lostError());
    }
    return new Promise((resolve, reject) => {
      this.#lostWaiters.add(reject);
      p.then((v) => {
        this.#lostWaiters.delete(reject);
        resolve(v);
      }, (e) => {
        this.#lostWaiters.delete(reject);
        reject(e);
      });
    });
  }

  /** Opens the step: its validation and out-of-memory error scopes wrap everything it records. */
  #begin(): void {
    this.#alive();
    if (this.#open) return;
    this.device.pushErrorScope("validation");
    this.device.pushErrorScope("out-of-memory");
    this.#open = true;
  }

  #enc(): GPUCommandEncoder {
    this.#begin();
    this.#encoder ??= this.device.createCommandEncoder();
    return this.#encoder;
  }

  /**
   * Records `what` into the step's encoder; in debug mode into its own command buffer under its own
   * error scope, because WebGPU reports a pass's errors only when its encoder finishes.
   */
  #record(what: string, encode: (enc: GPUCommandEncoder) => void, kernel: string | null = null): void {
    if (!this.#debug) {
      this.#endPass();
      encode(this.#enc());
      return;
    }
    this.#begin();
    const where = kernel ? `dispatch ${this.#dispatches + 1}` : `recorded after dispatch ${this.#dispatches}`;
    this.device.pushErrorScope("validation");
    const enc = this.device.createCommandEncoder({ label: what });
    encode(enc);
    this.#commands.push(enc.finish());
    this.#recorded.push({ what, where, kernel, error: this.device.popErrorScope() });
  }

  /** Timestamp writes for the next dispatch's pass when profiling and queries are left. */
  #timestamps(kernel: string): GPUComputePassTimestampWrites | undefined {
    if (!this.#querySet || this.#queryNames.length * 2 >= PROFILE_QUERIES) return undefined;
    const i = this.#queryNames.length;
    this.#queryNames.push(kernel);
    return { querySet: this.#querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 };
  }

  #computePass(): GPUComputePassEncoder {
    if (!this.#pass) this.#pass = this.#enc().beginComputePass();
    return this.#pass;
  }

  #endPass(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
  }
}

function envVar(name: string): string | undefined {
  return getHost().env(name) || undefined;
}

/** `LISA_GPU_DEBUG`: `1`/`true` on, unset/`0`/`false` off; anything else is refused by name. */
export function parseDebugFlag(value: string | undefined): boolean {
  const v = (value ?? "").toLowerCase();
  if (v === "" || v === "0" || v === "false") return false;
  if (v === "1" || v === "true") return true;
  throw new Error(`LISA_GPU_DEBUG=${value}: expected 1 or 0`);
}

const UNITS: Record<string, number> = { "": 1, b: 1, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };

/**
 * `LISA_MEMORY_LIMIT` in bytes: a whole number of bytes or a number with `KiB`, `MiB`, `GiB` or
 * `TiB` (`6GiB`, `1.5 GiB`); undefined when unset; anything else is refused by name.
 */
export function parseMemoryLimit(value: string | undefined): number | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  const bytes = m && unit ? Math.floor(Number(m[1]) * unit) : 0;
  if (bytes <= 0) {
    throw new Error(
      `LISA_MEMORY_LIMIT=${value}: expected a positive number of bytes, or one with KiB, MiB or GiB (e.g. 6GiB)`,
    );
  }
  return bytes;
}

function backendFromEnv(): string | undefined {
  return envVar("DENO_WEBGPU_BACKEND");
}

let adapterRequested = false;

/** Timestamps per step in profiling mode (two per dispatch). */
const PROFILE_QUERIES = 4096;

/**
 * Acquires an adapter and a device with the adapter's real limits (not WebGPU's defaults).
 * Throws {@link NoAdapterError} with install hints when there is none.
 */
export async function requestGpu(options: GpuOptions = {}): Promise<Gpu> {
  const debug = options.debug ?? parseDebugFlag(envVar("LISA_GPU_DEBUG"));
  const memoryLimit = options.memoryLimit ?? parseMemoryLimit(envVar("LISA_MEMORY_LIMIT"));
  if (memoryLimit !== undefined && !(Number.isInteger(memoryLimit) && memoryLimit > 0)) {
    throw new Error(`requestGpu: memoryLimit must be a positive whole number of bytes, got ${memoryLimit}`);
  }
  if (options.backend) {
    const current = backendFromEnv();
    if (adapterRequested && current !== options.backend) {
      throw new Error(
        `requestGpu: backend ${options.backend} asked for after WebGPU started with ${
          current ?? "the default"
        }; ` +
          "a backend can only be chosen before the first adapter request of the process",
      );
    }
    getHost().setEnv("DENO_WEBGPU_BACKEND", options.backend);
  }
  if (typeof navigator === "undefined" || !navigator.gpu) {
    throw new NoAdapterError("this runtime has no navigator.gpu");
  }
  adapterRequested = true;
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: options.powerPreference });
  if (!adapter) throw new NoAdapterError(`backend ${backendFromEnv() ?? "default"}`);
  const requiredLimits: Record<string, number> = {};
  for (const name of LIMIT_NAMES) requiredLimits[name] = adapter.limits[name];
  const setting = options.kernels ?? parseKernelFamily(envVar("LISA_KERNELS"));
  const features: GPUFeatureName[] = adapter.features.has("shader-f16") ? ["shader-f16"] : [];
  if (options.profile && adapter.features.has("timestamp-query")) features.push("timestamp-query");
  const device = await requestDevice(adapter, requiredLimits, features);
  const i = adapter.info;
  const description = i.description || i.device || "unknown";
  const fallback = i.isFallbackAdapter ?? false;
  const info: AdapterReport = {
    description,
    vendor: i.vendor,
    architecture: i.architecture,
    backend: backendFromEnv() ?? "default",
    fallback,
    f16: features.includes("shader-f16"),
    subgroupSize: device.features.has("subgroups") ? (i.subgroupMaxSize ?? i.subgroupMinSize ?? 0) : 0,
    kernels: resolveKernelFamily(setting, isSoftwareAdapter(description, fallback)),
    limits: {
      maxBufferSize: device.limits.maxBufferSize,
      maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: device.limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: device.limits.maxComputeInvocationsPerWorkgroup,
      maxStorageBuffersPerShaderStage: device.limits.maxStorageBuffersPerShaderStage,
      maxTextureDimension2D: device.limits.maxTextureDimension2D,
    },
  };
  return new Gpu(device, info, { profile: options.profile, debug, memoryLimit });
}

/**
 * The device with `features`, plus `subgroups` where the adapter grants it: Deno hides it from
 * `adapter.features`, yet requesting it succeeds on Vulkan, so ask and fall back without it.
 */
async function requestDevice(
  adapter: GPUAdapter,
  requiredLimits: Record<string, number>,
  features: GPUFeatureName[],
): Promise<GPUDevice> {
  try {
    return await adapter.requestDevice({
      requiredLimits,
      requiredFeatures: [...features, "subgroups" as GPUFeatureName],
    });
  } catch {
    return await adapter.requestDevice({ requiredLimits, requiredFeatures: features });
  }
}
