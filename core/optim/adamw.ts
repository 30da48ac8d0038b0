/**
 * AdamW over named parameters with fused per-parameter updates. A parameter's two moments are
 * allocated on its first update (category `optimizer`) and can be released on demand (LISA's
 * `reset`), moved to host memory and back (`offload`), or kept. Weight decay applies to ≥ 2-D
 * tensors only, as nanoGPT does. Gradient clipping by global norm happens on the GPU. The
 * `optimizer` category holds exactly the moments (8 bytes per updated parameter); the small
 * per-step buffers (learning rate and bias corrections, clip factor) are `workspace`.
 */
import { vectorWidth } from "../../kernels/kernel.ts";
import { adamwKernel, clipFactorKernel, HYPER_SLOT } from "../../kernels/adamw.ts";
import type { Gpu } from "../gpu.ts";
import { vec4Input } from "../ops/pack.ts";
import { globalNorm } from "../ops/reduce.ts";
import { empty, fromArray, type Tensor, zeros } from "../tensor.ts";

/** AdamW settings. */
export interface AdamWOptions {
  /** β1, β2 (default 0.9, 0.999 as PyTorch; nanoGPT uses 0.9, 0.95). */
  betas?: [number, number];
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay for ≥ 2-D parameters (default 0.01, PyTorch's AdamW default). */
  weightDecay?: number;
}

/** One parameter's optimizer state. */
export interface ParamState {
  /** First moment, on the GPU (null while offloaded). */
  m: Tensor | null;
  /** Second moment. */
  v: Tensor | null;
  /** Host copies while offloaded, with the parameter's shape. */
  host: { m: Float32Array; v: Float32Array; shape: readonly number[] } | null;
  /** Updates applied so far (for bias correction). */
  step: number;
}

/** What {@link AdamW.step} measured. */
export interface StepResult {
  /** Global gradient norm before clipping (one element, read it after the submit). */
  gradNorm: Tensor;
}

/** Fused AdamW. */
export class AdamW {
  /** The device. */
  readonly gpu: Gpu;
  /** First-moment decay. */
  readonly beta1: number;
  /** Second-moment decay. */
  readonly beta2: number;
  /** Added to the denominator. */
  readonly eps: number;
  /** Decoupled weight decay of ≥ 2-D parameters. */
  readonly weightDecay: number;
  readonly #state = new Map<string, ParamState>();
  #hyper: Tensor | null = null;
  #clip: Tensor;

  /** An optimizer on `gpu`. */
  constructor(gpu: Gpu, options: AdamWOptions = {}) {
    this.gpu = gpu;
    [this.beta1, this.beta2] = options.betas ?? [0.9, 0.999];
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0.01;
    for (const [k, b] of [["beta1", this.beta1], ["beta2", this.beta2]] as const) {
      if (!(b >= 0 && b < 1)) throw new Error(`AdamW: ${k} = ${b} must be in [0, 1)`);
    }
    this.#clip = fromArray(gpu, [1], [1], { category: "workspace", name: "adamw_clip" });
  }

  /** The state of `name`, if it has any. */
  state(name: string): ParamState | undefined {
    return this.#state.get(name);
  }

  /** Names of parameters with state (on the GPU or offloaded). */
  names(): string[] {
    return [...this.#state.keys()];
  }

  /**
   * Updates every parameter in `params` that has a gradient, with learning rate `lr`, after
   * clipping all their gradients together to global norm `maxGradNorm` (when given). Records
   * everything into the current step; returns the gradient norm tensor when clipping.
   */
  step(params: readonly [string, Tensor][], lr: number, maxGradNorm?: number): StepResult | null {
    const gpu = this.gpu;
    const live = params.filter(([, p]) => p.grad);
    if (live.length === 0) return null;
    let result: StepResult | null = null;
    if (maxGradNorm !== undefined) {
      const norm = globalNorm(gpu, live.map(([, p]) => p.grad!));
      gpu.dispatch(clipFactorKernel(maxGradNorm), [norm.binding("adamw"), this.#clip.binding("adamw")]);
      result = { gradNorm: norm };
    } else {
      this.#clip.upload([1]);
    }
    const hyper = this.#hyperBuffer(live.length);
    const values = new Float32Array(live.length * HYPER_SLOT);
    const states = live.map(([name, p], i) => {
      const s = this.#ensure(name, p);
      s.step++;
      values.set([lr, 1 - this.beta1 ** s.step, 1 - this.beta2 ** s.step], i * HYPER_SLOT);
      return s;
    });
    gpu.write(hyper.buffer, 0, values);
    live.forEach(([, p], i) => {
      const s = states[i];
      const hyperSlot = { buffer: hyper.buffer, offset: i * HYPER_SLOT * 4, size: HYPER_SLOT * 4 };
      const constants = {
        beta1: this.beta1,
        beta2: this.beta2,
        eps: this.eps,
        weightDecay: p.shape.length >= 2 ? this.weightDecay : 0,
      };
      const ins = [p, p.grad!, s.m!, s.v!].map((t) => vec4Input(t, "adamw", vectorWidth(p.size)));
      if (ins.every((x) => x.src === "texture")) {
        gpu.dispatch(adamwKernel(p.size, constants, true), [
          p.binding("adamw"),
          s.m!.binding("adamw"),
          s.v!.binding("adamw"),
          hyperSlot,
          this.#clip.binding("adamw"),
          ...ins.map((x) => x.binding),
        ]);
      } else {
        gpu.dispatch(adamwKernel(p.size, constants), [
          p.binding("adamw"),
          p.grad!.binding("adamw"),
          s.m!.binding("adamw"),
          s.v!.binding("adamw"),
          hyperSlot,
          this.#clip.binding("adamw"),
        ]);
      }
      for (const x of ins) x.done();
    });
    return result;
  }

  /** Frees the state of `name` (its next update starts fresh, step 1). */
  release(name: string): void {
    const s = this.#state.get(name);
    if (!s) return;
    s.m?.dispose();
    s.v?.dispose();
    this.#state.delete(name);
  }

  /** Copies the state of each of `names` to host memory and frees its GPU buffers (one GPU round trip). */
  async offload(...names: string[]): Promise<void> {
    const onGpu = names.map((n) => this.#state.get(n)).filter((s): s is ParamState => !!s?.m && !!s.v);
    const reads = onGpu.map((s) => [s.m!.read(), s.v!.read()]);
    if (onGpu.length) await this.gpu.submit();
    for (let i = 0; i < onGpu.length; i++) {
      const s = onGpu[i];
      s.host = {
        m: (await reads[i][0]) as Float32Array,
        v: (await reads[i][1]) as Float32Array,
        shape: s.m!.shape,
      };
      s.m!.dispose();
      s.v!.dispose();
      s.m = s.v = null;
    }
  }

  /**
   * Host copies of every parameter's state (one GPU round trip), for checkpoints; `offloaded`
   * says the state was in host memory (LISA's `offload` policy) rather than on the GPU.
   */
  async snapshot(): Promise<
    {
      name: string;
      step: number;
      shape: readonly number[];
      m: Float32Array;
      v: Float32Array;
      offloaded: boolean;
    }[]
  > {
    const entries = [...this.#state];
    const reads = entries.map(([, s]) => (s.m && s.v ? [s.m.read(), s.v.read()] : null));
    await this.gpu.submit();
    const out = [];
    for (let i = 0; i < entries.length; i++) {
      const [name, s] = entries[i];
      const r = reads[i];
      const [m, v] = r
        ? [(await r[0]) as Float32Array, (await r[1]) as Float32Array]
        : [s.host!.m, s.host!.v];
      out.push({ name, step: s.step, shape: r ? s.m!.shape : s.host!.shape, m, v, offloaded: !r });
    }
    return out;
  }

  /**
   * Restores one parameter's state from a {@link snapshot}: onto the GPU, or kept in host memory
   * when `offloaded` (it moves to the GPU on the parameter's next update, as after {@link offload}).
   */
  load(
    name: string,
    shape: readonly number[],
    step: number,
    m: Float32Array,
    v: Float32Array,
    offloaded = false,
  ): void {
    const size = shape.reduce((a, b) => a * b, 1);
    if (m.length !== size || v.length !== size || !Number.isInteger(step) || step < 0) {
      throw new Error(
        `AdamW: state of ${name} has ${m.length}/${v.length} values and step ${step}; expected ${size} values of [${shape}]`,
      );
    }
    this.release(name);
    if (offloaded) {
      this.#state.set(name, { m: null, v: null, host: { m, v, shape }, step });
    } else {
      this.#state.set(name, { ...this.#upload(name, shape, m, v), host: null, step });
    }
  }

  /** Bytes of optimizer state on the GPU (moments only). */
  gpuBytes(): number {
    let n = 0;
    for (const s of this.#state.values()) n += (s.m?.bytes ?? 0) + (s.v?.bytes ?? 0);
    return n;
  }

  /** Frees all state and buffers. */
  dispose(): void {
    for (const name of this.names()) this.release(name);
    this.#hyper?.dispose();
    this.#clip.dispose();
  }

  #ensure(name: string, p: Tensor): ParamState {
    let s = this.#state.get(name);
    if (!s) {
      s = { m: null, v: null, host: null, step: 0 };
      this.#state.set(name, s);
    }
    if (!s.m || !s.v) {
      if (s.host) {
        Object.assign(s, this.#upload(name, p.shape, s.host.m, s.host.v));
        s.host = null;
      } else {
        const opts = { category: "optimizer" as const };
        s.m = zeros(this.gpu, p.shape, { ...opts, name: `${name}.exp_avg` });
        s.v = zeros(this.gpu, p.shape, { ...opts, name: `${name}.exp_avg_sq` });
      }
    }
    return s;
  }

  /** GPU moments of `name` from host copies. */
  #upload(
    name: string,
    shape: readonly number[],
    m: Float32Array,
    v: Float32Array,
  ): { m: Tensor; v: Tensor } {
    const opts = { category: "optimizer" as const };
    return {
      m: fromArray(this.gpu, m, shape, { ...opts, name: `${name}.exp_avg` }),
      v: fromArray(this.gpu, v, shape, { ...opts, name: `${name}.exp_avg_sq` }),
    };
  }

  #hyperBuffer(params: number): Tensor {
    if (!this.#hyper || this.#hyper.size < params * HYPER_SLOT) {
      this.#hyper?.dispose();
      this.#hyper = empty(this.gpu, [params * HYPER_SLOT], { category: "workspace", name: "adamw_hyper" });
    }
    return this.#hyper;
  }
}
