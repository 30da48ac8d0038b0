/**
 * Pipeline cache: one compute pipeline per (kernel name, key). Creation runs inside an error scope;
 * the scope's verdict is awaited before the next submit, so a WGSL error surfaces as an Error that
 * names the kernel and its sizes instead of a validation message about an invalid pipeline.
 */
import type { Kernel } from "./kernel.ts";

/** A compiled kernel with its bind group layout. */
export interface Pipeline {
  /** The kernel it was compiled from. */
  readonly kernel: Kernel;
  /** The compute pipeline. */
  readonly pipeline: GPUComputePipeline;
  /** Layout of bind group 0. */
  readonly layout: GPUBindGroupLayout;
}

/** Raised when a kernel's WGSL does not compile or its pipeline is invalid. */
export class KernelCompileError extends Error {
  /** The kernel that failed. */
  readonly kernel: Kernel;
  /** Wraps the device's message with the kernel's name and sizes. */
  constructor(kernel: Kernel, message: string) {
    super(`kernel ${kernel.name} [${kernel.key}] failed to compile:\n${message.trim()}`);
    this.name = "KernelCompileError";
    this.kernel = kernel;
  }
}

/** Caches pipelines per kernel and checks each new one's compilation. */
export class PipelineCache {
  readonly #device: GPUDevice;
  readonly #cache = new Map<string, Pipeline>();
  #pending: Promise<void>[] = [];
  #compileMs = 0;

  /** A cache for pipelines on `device`. */
  constructor(device: GPUDevice) {
    this.#device = device;
  }

  /** Number of distinct pipelines compiled so far. */
  get size(): number {
    return this.#cache.size;
  }

  /** Milliseconds spent in pipeline creation so far (host time). */
  get compileMs(): number {
    return this.#compileMs;
  }

  /** The pipeline for `kernel`, created on first use (its compile check is awaited by {@link check}). */
  get(kernel: Kernel): Pipeline {
    const id = `${kernel.name}|${kernel.key}`;
    const hit = this.#cache.get(id);
    if (hit) return hit;
    const t0 = performance.now();
    const device = this.#device;
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ code: kernel.code, label: `${kernel.name}[${kernel.key}]` });
    const pipeline = device.createComputePipeline({
      layout: "auto",
      compute: { module, entryPoint: "main" },
      label: `${kernel.name}[${kernel.key}]`,
    });
    const scope = device.popErrorScope();
    const p: Pipeline = { kernel, pipeline, layout: pipeline.getBindGroupLayout(0) };
    this.#compileMs += performance.now() - t0;
    this.#cache.set(id, p);
    this.#pending.push(
      scope.then(async (err) => {
        if (!err) return;
        this.#cache.delete(id);
        const info = await module.getCompilationInfo();
        const msgs = info.messages.filter((m) => m.type === "error").map((m) => m.message);
        throw new KernelCompileError(kernel, msgs.length ? msgs.join("\n") : err.message);
      }),
    );
    return p;
  }

  /** Resolves once every pipeline created so far is known good; rejects with the first failure. */
  async check(): Promise<void> {
    const pending = this.#pending;
    this.#pending = [];
    const results = await Promise.allSettled(pending);
    const bad = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (bad) throw bad.reason;
  }

  /** Creates (if needed) and checks `kernel`'s pipeline now. */
  async compile(kernel: Kernel): Promise<Pipeline> {
    const p = this.get(kernel);
    await this.check();
    return p;
  }
}
