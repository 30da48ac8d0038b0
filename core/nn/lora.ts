/**
 * LoRA as Hugging Face PEFT defines it, for GPT-2's Conv1D layers (fan_in_fan_out) and LLaMA's
 * nn.Linear ones: the frozen base y = x·W + b plus scaling · dropout(x)·Aᵀ·Bᵀ, with A [r, in] ~ kaiming-uniform(a = √5) (that is
 * U(−1/√in, 1/√in)), B [out, r] = 0, scaling alpha/r (rsLoRA: alpha/√r), dropout on the adapter's
 * input only and only in training mode (off under `evalMode`, as after PyTorch's `model.eval()`).
 * Merging adds scaling·(B·A)ᵀ to a W stored [in, out], scaling·B·A to one stored [out, in].
 */
import { noGrad } from "../autograd.ts";
import { dropout } from "../ops/dropout.ts";
import { add, scale } from "../ops/elementwise.ts";
import { matmul } from "../ops/matmul.ts";
import type { Rng } from "../random.ts";
import { fromArray, type Tensor, tidy, zeros } from "../tensor.ts";
import type { Linear, LinearLike } from "./layers.ts";

/** LoRA settings (PEFT names). */
export interface LoraConfig {
  /** Rank r. */
  rank: number;
  /** lora_alpha. */
  alpha: number;
  /** lora_dropout (default 0). */
  dropout?: number;
  /** use_rslora: scaling alpha/√r instead of alpha/r. */
  rslora?: boolean;
}

/** A Linear with a low-rank adapter. */
export class LoRALinear implements LinearLike {
  /** The frozen layer. */
  readonly base: Linear;
  /** lora_A [r, in]. */
  readonly A: Tensor;
  /** lora_B [out, r]. */
  readonly B: Tensor;
  /** alpha/r (or alpha/√r). */
  readonly scaling: number;
  /** Dropout probability on the adapter's input. */
  readonly dropout: number;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly #rng: Rng;
  #merged = false;

  /**
   * Wraps `base` (whose parameters are frozen); A is drawn from `rng`, which also draws the dropout
   * masks of training-mode forwards.
   */
  constructor(base: Linear, config: LoraConfig, rng: Rng, name: string) {
    const { rank: r, alpha } = config;
    if (!Number.isInteger(r) || r < 1) throw new Error(`LoRA: rank ${r} must be a positive integer`);
    if (!(alpha > 0)) throw new Error(`LoRA: alpha ${alpha} must be positive`);
    this.base = base;
    this.inFeatures = base.inFeatures;
    this.outFeatures = base.outFeatures;
    this.scaling = config.rslora ? alpha / Math.sqrt(r) : alpha / r;
    this.dropout = config.dropout ?? 0;
    this.#rng = rng;
    base.weight.requiresGrad = false;
    if (base.bias) base.bias.requiresGrad = false;
    const bound = 1 / Math.sqrt(base.inFeatures);
    const a = Float32Array.from({ length: r * base.inFeatures }, () => (2 * rng.next() - 1) * bound);
    const gpu = base.weight.gpu;
    this.A = fromArray(gpu, a, [r, base.inFeatures], {
      requiresGrad: true,
      category: "weights",
      name: `${name}.lora_A.weight`,
    });
    this.B = zeros(gpu, [base.outFeatures, r], {
      requiresGrad: true,
      category: "weights",
      name: `${name}.lora_B.weight`,
    });
  }

  /** True while the adapter is folded into the base weight. */
  get merged(): boolean {
    return this.#merged;
  }

  /** x·W + b + scaling·dropout(x)·Aᵀ·Bᵀ (dropout only in training mode; just the base once merged). */
  forward(x: Tensor): Tensor {
    const y = this.base.forward(x);
    if (this.#merged) return y;
    const xd = dropout(x, this.dropout, this.#rng);
    const h = matmul(xd, this.A, { transB: true });
    const hs = scale(h, this.scaling);
    const d = matmul(hs, this.B, { transB: true });
    const out = add(y, d);
    for (const t of [y, h, hs, d]) t.dispose();
    if (xd !== x) xd.dispose();
    return out;
  }

  /** W += scaling·(B·A)ᵀ, or B·A for an [out, in] W (−= when `sign` is −1); records into the current step. */
  #fold(sign: 1 | -1): void {
    noGrad(() => {
      const w = this.base.weight;
      const delta = () =>
        this.base.layout === "in_out"
          ? matmul(this.A, this.B, { transA: true, transB: true })
          : matmul(this.B, this.A);
      const updated = tidy(() => add(w, scale(delta(), sign * this.scaling)));
      w.gpu.copy(updated.buffer, updated.byteOffset, w.buffer, w.byteOffset, w.bytes);
      updated.dispose();
    });
  }

  /** Folds the adapter into the base weight; forward then runs the base alone. */
  merge(): void {
    if (this.#merged) throw new Error("LoRA: already merged");
    this.#fold(1);
    this.#merged = true;
  }

  /** Takes the adapter back out of the base weight. */
  unmerge(): void {
    if (!this.#merged) throw new Error("LoRA: not merged");
    this.#fold(-1);
    this.#merged = false;
  }

  /** The base's `weight`/`bias` and `lora_A.weight`, `lora_B.weight` (PEFT's names). */
  namedParameters(): [string, Tensor][] {
    return [...this.base.namedParameters(), ["lora_A.weight", this.A], ["lora_B.weight", this.B]];
  }
}
