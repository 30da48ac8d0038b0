/**
 * Adapter and device (with the adapter's real limits), adapter report, and the step recorder: every
 * kernel dispatched between two submits goes into one command encoder (one compute pass while no copy
 * intervenes), so a training step costs one submit. Readback is explicit and async.
 */
import { checkLoops, type Kernel } from "../kernels/kernel.ts";
import { type Pipeline, PipelineCache } from "../kernels/cache.ts";
import {
  isSoftwareAdapter,
  type KernelFamily,
  type KernelFamilySetting,
  parseKernelFamily,
  resolveKernelFamily,
} from "../kernels/select.ts";
import { type Allocation, Memory } from "./memory.ts";

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

/** Raised when the GPU rejects the commands of a step; names the kernels recorded in it. */
export class GpuStepError extends Error {}

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
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #reads: PendingRead[] = [];
  #afterSubmit: (() => void)[] = [];
  #labels: string[] = [];
  #dispatches = 0;
  #submits = 0;
  #readbacks = 0;
  #lost: string | null = null;
  #querySet: GPUQuerySet | null = null;
  #queryNames: string[] = [];
  #profile = new Map<string, KernelTime>();
  #profileReads: Promise<void>[] = [];

  /** Wraps a device; use {@link requestGpu} to get one. `profile` needs the timestamp-query feature. */
  constructor(device: GPUDevice, info: AdapterReport, profile = false) {
    this.device = device;
    this.info = info;
    if (profile) {
      if (!device.features.has("timestamp-query")) {
        throw new Error("profiling needs the adapter's timestamp-query feature, which this adapter lacks");
      }
      this.#querySet = device.createQuerySet({ type: "timestamp", count: PROFILE_QUERIES });
    }
    this.memory = new Memory(device, info.limits.maxBufferSize);
    this.pipelines = new PipelineCache(device);
    this.kernels = info.kernels;
    device.lost.then((i) => {
      this.#lost = `${i.reason}: ${i.message}`;
    });
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
    const p: Pipeline = this.pipelines.get(kernel);
    const bindGroup = this.device.createBindGroup({
      layout: p.layout,
      entries: bindings.map((resource, binding) => ({ binding, resource })),
    });
    if (this.#querySet && this.#queryNames.length * 2 < PROFILE_QUERIES) {
      this.#endPass();
      const i = this.#queryNames.length;
      this.#queryNames.push(kernel.name);
      this.#pass = this.#enc().beginComputePass({
        timestampWrites: {
          querySet: this.#querySet,
          beginningOfPassWriteIndex: 2 * i,
          endOfPassWriteIndex: 2 * i + 1,
        },
      });
    }
    const pass = this.#computePass();
    pass.setPipeline(p.pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(workgroups[0], workgroups[1] ?? 1, workgroups[2] ?? 1);
    this.#dispatches++;
    if (this.#labels.length < 64) this.#labels.push(`${kernel.name}[${kernel.key}]`);
  }

  /** Records a buffer-to-buffer copy of `bytes` bytes. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.#endPass();
    this.#enc().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
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
    this.#endPass();
    // One row needs no row pitch (and then no 256-byte alignment of it).
    const layout = rows === 1
      ? { buffer: src, offset }
      : { buffer: src, offset, bytesPerRow, rowsPerImage: rows };
    this.#enc().copyBufferToTexture(layout, { texture, origin: [0, y] }, [width, rows]);
  }

  /** Records zeroing `bytes` bytes (a multiple of 4) of `buffer`. */
  clear(buffer: GPUBuffer, offset: number, bytes: number): void {
    this.#endPass();
    this.#enc().clearBuffer(buffer, offset, Math.ceil(bytes / 4) * 4);
  }

  /**
   * Writes `data` into `dst` at `offset`, ordered after everything recorded so far. With nothing
   * recorded this is `queue.writeBuffer`; otherwise it goes through a staging copy, because a
   * queue write would land before the recorded commands that may still read the old contents.
   */
  write(dst: GPUBuffer, offset: number, data: ArrayBufferView<ArrayBuffer>): void {
    const bytes = data.byteLength;
    if (bytes % 4 !== 0) throw new Error(`gpu.write: ${bytes} bytes is not a multiple of 4`);
    if (!this.#encoder) {
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
   * them once the step is submitted and the GPU has finished it. Nothing waits until then.
   */
  read(src: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    const size = Math.ceil(bytes / 4) * 4;
    const alloc = this.memory.alloc(size, "workspace", "readback", "readback");
    this.copy(src, offset, alloc.buffer, 0, size);
    return new Promise((resolve, reject) => this.#reads.push({ alloc, bytes, resolve, reject }));
  }

  /**
   * Submits everything recorded since the last submit as one command buffer, after checking new
   * pipelines compiled. Rejects with the kernel names when the device rejects the commands.
   */
  async submit(): Promise<void> {
    if (this.#lost) throw new GpuStepError(`GPU device lost (${this.#lost})`);
    let compileError: unknown = null;
    await this.pipelines.check().catch((e) => compileError = e);
    if (!this.#encoder) {
      if (compileError) throw compileError;
      this.#settleReads();
      return;
    }
    this.#endPass();
    if (this.#querySet && this.#queryNames.length) this.#resolveProfile();
    const encoder = this.#encoder;
    const labels = this.#labels;
    const dispatches = this.#dispatches;
    this.#encoder = null;
    this.#labels = [];
    this.#dispatches = 0;
    const commands = encoder.finish();
    // A step that uses a kernel which failed to compile is dropped whole, not half-run.
    if (!compileError) {
      this.device.queue.submit([commands]);
      this.#submits++;
    }
    const oom = await this.device.popErrorScope();
    const invalid = await this.device.popErrorScope();
    const afterSubmit = this.#afterSubmit;
    this.#afterSubmit = [];
    for (const f of afterSubmit) f();
    const err = invalid ?? oom;
    const failure = compileError ?? (err &&
      new GpuStepError(
        `GPU rejected a step of ${dispatches} dispatches (${labels.slice(0, 8).join(", ")}${
          labels.length > 8 ? ", ..." : ""
        }): ${err.message}`,
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
    this.#enc().resolveQuerySet(this.#querySet!, 0, names.length * 2, resolve.buffer, 0);
    const read = this.read(resolve.buffer, 0, bytes);
    this.#afterSubmit.push(() => this.memory.free(resolve));
    this.#profileReads.push(read.then((data) => {
      const t = new BigUint64Array(data);
      names.forEach((name, i) => {
        const e = this.#profile.get(name) ?? { kernel: name, count: 0, ms: 0 };
        e.count++;
        e.ms += Number(t[2 * i + 1] - t[2 * i]) / 1e6;
        this.#profile.set(name, e);
      });
    }));
  }

  /** Resolves when the GPU has finished all submitted work (costs a round trip: ≥ 10 ms here). */
  async idle(): Promise<void> {
    await this.device.queue.onSubmittedWorkDone();
  }

  #settleReads(): void {
    for (const r of this.#reads.splice(0)) {
      this.#readbacks++;
      r.alloc.buffer.mapAsync(GPUMapMode.READ).then(() => {
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

  #enc(): GPUCommandEncoder {
    if (!this.#encoder) {
      this.device.pushErrorScope("validation");
      this.device.pushErrorScope("out-of-memory");
      this.#encoder = this.device.createCommandEncoder();
    }
    return this.#encoder;
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
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env for it: as if unset
  }
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
    Deno.env.set("DENO_WEBGPU_BACKEND", options.backend);
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
  return new Gpu(device, info, options.profile);
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
