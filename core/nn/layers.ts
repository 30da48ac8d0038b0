/**
 * The layers GPT-2 and LLaMA are made of, named as in their checkpoints: Linear (GPT-2's Conv1D with
 * its weight stored [in, out], or torch's nn.Linear with its weight stored [out, in] as LLaMA's are),
 * LayerNorm, RMSNorm and Embedding. Each owns its parameters (category `weights`).
 */
import type { Gpu } from "../gpu.ts";
import { embedding } from "../ops/embedding.ts";
import { layerNorm } from "../ops/layernorm.ts";
import { matmul } from "../ops/matmul.ts";
import { rmsNorm } from "../ops/rmsnorm.ts";
import type { Rng } from "../random.ts";
import { empty, fromArray, full, shapeSize, type Tensor } from "../tensor.ts";

/** Something with named parameters. */
export interface Module {
  /** Parameters with their checkpoint names relative to this module, e.g. `weight`. */
  namedParameters(): [string, Tensor][];
}

/** A module mapping [..., in] to [..., out]; LoRA wraps one of these. */
export interface LinearLike extends Module {
  /** Input features. */
  readonly inFeatures: number;
  /** Output features. */
  readonly outFeatures: number;
  /** y = f(x). */
  forward(x: Tensor): Tensor;
}

/** How a fresh parameter is filled: N(0, std²) or a constant. */
export type Fill = { normal: number } | { constant: number };

/** Makes a parameter tensor (trainable, category `weights`) with its checkpoint name. */
export type ParamFactory = (name: string, shape: number[], fill: Fill) => Tensor;

/** Values drawn from N(0, std²). */
export function normalArray(rng: Rng, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal() * std;
  return out;
}

/** A factory that fills parameters as asked, drawing from `rng` in creation order. */
export function initParams(gpu: Gpu, rng: Rng): ParamFactory {
  return (name, shape, fill) => {
    const options = { requiresGrad: true, category: "weights" as const, name };
    return "normal" in fill
      ? fromArray(gpu, normalArray(rng, shapeSize(shape, name), fill.normal), shape, options)
      : full(gpu, shape, fill.constant, options);
  };
}

/** A factory that leaves parameters uninitialized (a checkpoint loader fills them). */
export function emptyParams(gpu: Gpu): ParamFactory {
  return (name, shape) => empty(gpu, shape, { requiresGrad: true, category: "weights", name });
}

/**
 * How a Linear's weight is stored: `in_out` as GPT-2's Conv1D ([in, out], y = x·W), `out_in` as
 * torch's nn.Linear and LLaMA's projections ([out, in], y = x·Wᵀ).
 */
export type WeightLayout = "in_out" | "out_in";

/** Options of {@link Linear}. */
export interface LinearOptions {
  /** A bias [out] (default true). */
  bias?: boolean;
  /** How the weight is stored (default `in_out`, GPT-2's Conv1D). */
  layout?: WeightLayout;
}

/** y = x·W + b, W stored [in, out] (GPT-2's Conv1D) or [out, in] (nn.Linear, read transposed). */
export class Linear implements LinearLike {
  /** [in, out] or [out, in], as `layout` says. */
  weight: Tensor;
  /** [out], or null without bias. */
  bias: Tensor | null;
  /** How the weight is stored. */
  readonly layout: WeightLayout;
  readonly inFeatures: number;
  readonly outFeatures: number;

  /** Weights ~ N(0, std²), bias 0. */
  constructor(
    make: ParamFactory,
    inFeatures: number,
    outFeatures: number,
    std: number,
    name: string,
    options: LinearOptions = {},
  ) {
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    this.layout = options.layout ?? "in_out";
    const shape = this.layout === "in_out" ? [inFeatures, outFeatures] : [outFeatures, inFeatures];
    this.weight = make(`${name}.weight`, shape, { normal: std });
    this.bias = options.bias ?? true ? make(`${name}.bias`, [outFeatures], { constant: 0 }) : null;
  }

  /** x·W + b (the bias added in the matmul's store; an [out, in] weight read transposed). */
  forward(x: Tensor): Tensor {
    return matmul(x, this.weight, {
      transB: this.layout === "out_in",
      ...(this.bias ? { bias: this.bias } : {}),
    });
  }

  /** `weight`, `bias`. */
  namedParameters(): [string, Tensor][] {
    return this.bias ? [["weight", this.weight], ["bias", this.bias]] : [["weight", this.weight]];
  }
}

/** LayerNorm over the last dimension with weight 1 and bias 0 at init. */
export class LayerNorm implements Module {
  /** γ [C]. */
  weight: Tensor;
  /** β [C]. */
  bias: Tensor;
  /** Added to the variance. */
  readonly eps: number;

  /** γ = 1, β = 0. */
  constructor(make: ParamFactory, c: number, eps: number, name: string) {
    this.eps = eps;
    this.weight = make(`${name}.weight`, [c], { constant: 1 });
    this.bias = make(`${name}.bias`, [c], { constant: 0 });
  }

  /** Normalized x. */
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }

  /** `weight`, `bias`. */
  namedParameters(): [string, Tensor][] {
    return [["weight", this.weight], ["bias", this.bias]];
  }
}

/** LLaMA's RMSNorm over the last dimension, weight 1 at init (Hugging Face's LlamaRMSNorm). */
export class RMSNorm implements Module {
  /** w [C]. */
  weight: Tensor;
  /** Added to the mean square (`rms_norm_eps`). */
  readonly eps: number;

  /** w = 1. */
  constructor(make: ParamFactory, c: number, eps: number, name: string) {
    this.eps = eps;
    this.weight = make(`${name}.weight`, [c], { constant: 1 });
  }

  /** x · rsqrt(mean(x²) + eps) · w. */
  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }

  /** `weight`. */
  namedParameters(): [string, Tensor][] {
    return [["weight", this.weight]];
  }
}

/** A lookup table [V, C] with rows ~ N(0, std²). */
export class Embedding implements Module {
  /** [V, C]. */
  weight: Tensor;

  /** Rows ~ N(0, std²). */
  constructor(make: ParamFactory, v: number, c: number, std: number, name: string) {
    this.weight = make(`${name}.weight`, [v, c], { normal: std });
  }

  /** Rows for `ids` (u32 tensor) whose host copy is `hostIds`. */
  forward(ids: Tensor, hostIds: ArrayLike<number>): Tensor {
    return embedding(this.weight, ids, hostIds);
  }

  /** `weight`. */
  namedParameters(): [string, Tensor][] {
    return [["weight", this.weight]];
  }
}
