/**
 * LLaMA as Hugging Face defines it (LlamaForCausalLM; Mistral within its sliding window): token
 * embedding, pre-norm decoder layers (input_layernorm → self-attention with rotary q/k and
 * grouped-query heads → residual, post_attention_layernorm → SwiGLU MLP → residual), a final RMSNorm
 * and an LM head, untied (`lm_head.weight`) or tied to the embedding. No biases. Parameter names are
 * the checkpoint's (`model.layers.0.self_attn.q_proj.weight`); Linear weights are stored [out, in] as
 * transformers stores them. Fresh models use transformers' init: N(0, 0.02²), RMSNorms 1.
 */
import type { Gpu } from "../gpu.ts";
import { attention } from "../ops/attention.ts";
import { concatLast } from "../ops/concat.ts";
import { rope } from "../ops/rope.ts";
import { swiglu } from "../ops/swiglu.ts";
import { Rng } from "../random.ts";
import { fromArray, type Tensor } from "../tensor.ts";
import {
  Embedding,
  emptyParams,
  initParams,
  Linear,
  type LinearLike,
  type Module,
  type ParamFactory,
  RMSNorm,
} from "./layers.ts";
import type { LlamaConfig } from "./llama_config.ts";
import {
  CausalLM,
  checkIds,
  type LanguageModel,
  type LinearSlot,
  type ModelInput,
  prefix,
  residual,
} from "./model.ts";

const STD = 0.02; // transformers' initializer_range

/** Throws unless `c` describes a LLaMA we can build (the checks config.json parsing also makes, and ours). */
export function validateLlamaConfig(c: LlamaConfig): void {
  for (const k of ["vocabSize", "blockSize", "nLayer", "nHead", "nKvHead", "nEmbd", "nInner"] as const) {
    if (!Number.isInteger(c[k]) || c[k] <= 0) {
      throw new Error(`LLaMA config: ${k} = ${c[k]} must be a positive integer`);
    }
  }
  if (c.nEmbd % c.nHead !== 0 || (c.nEmbd / c.nHead) % 4 !== 0) {
    throw new Error(
      `LLaMA config: hidden size ${c.nEmbd} must split into ${c.nHead} heads whose size is a multiple of 4`,
    );
  }
  if (c.nHead % c.nKvHead !== 0) {
    throw new Error(`LLaMA config: ${c.nHead} heads are not divisible by ${c.nKvHead} key/value heads`);
  }
  if (!(c.rmsNormEps > 0) || !(c.ropeTheta > 0)) {
    throw new Error(`LLaMA config: rmsNormEps ${c.rmsNormEps} and ropeTheta ${c.ropeTheta} must be positive`);
  }
}

const linear = (make: ParamFactory, inF: number, outF: number, name: string) =>
  new Linear(make, inF, outF, STD, name, { bias: false, layout: "out_in" });

/** Self-attention: q/k/v projections, rotary q and k, grouped-query causal attention, o_proj. */
export class LlamaAttention implements Module {
  /** [C → H·hd]. */
  q_proj: LinearLike;
  /** [C → Hkv·hd]. */
  k_proj: LinearLike;
  /** [C → Hkv·hd]. */
  v_proj: LinearLike;
  /** [H·hd → C]. */
  o_proj: LinearLike;
  /** Query heads. */
  readonly nHead: number;
  /** Key/value heads. */
  readonly nKvHead: number;
  /** rope_theta. */
  readonly ropeTheta: number;
  /** Use the fused kernels (default) or the non-fused reference path. */
  fused = true;

  /** Parameters from `make`. */
  constructor(make: ParamFactory, c: LlamaConfig, name: string) {
    const hd = c.nEmbd / c.nHead;
    this.nHead = c.nHead;
    this.nKvHead = c.nKvHead;
    this.ropeTheta = c.ropeTheta;
    this.q_proj = linear(make, c.nEmbd, c.nHead * hd, `${name}.q_proj`);
    this.k_proj = linear(make, c.nEmbd, c.nKvHead * hd, `${name}.k_proj`);
    this.v_proj = linear(make, c.nEmbd, c.nKvHead * hd, `${name}.v_proj`);
    this.o_proj = linear(make, c.nHead * hd, c.nEmbd, `${name}.o_proj`);
  }

  /** [B, T, C] → [B, T, C]. */
  forward(x: Tensor): Tensor {
    const q = this.q_proj.forward(x);
    const qr = rope(q, this.ropeTheta, this.nHead);
    q.dispose();
    const k = this.k_proj.forward(x);
    const kr = rope(k, this.ropeTheta, this.nKvHead);
    k.dispose();
    const v = this.v_proj.forward(x);
    // One packed row (q heads, k heads, v heads), the layout the fused kernels read.
    const qkv = concatLast([qr, kr, v]);
    for (const t of [qr, kr, v]) t.dispose();
    const y = attention(qkv, this.nHead, { nKvHead: this.nKvHead, fused: this.fused });
    qkv.dispose();
    const out = this.o_proj.forward(y);
    y.dispose();
    return out;
  }

  /** `q_proj.*`, `k_proj.*`, `v_proj.*`, `o_proj.*`. */
  namedParameters(): [string, Tensor][] {
    return [
      ...prefix("q_proj", this.q_proj),
      ...prefix("k_proj", this.k_proj),
      ...prefix("v_proj", this.v_proj),
      ...prefix("o_proj", this.o_proj),
    ];
  }
}

/** SwiGLU MLP: down_proj(silu(gate_proj(x)) · up_proj(x)). */
export class LlamaMLP implements Module {
  /** [C → I]. */
  gate_proj: LinearLike;
  /** [C → I]. */
  up_proj: LinearLike;
  /** [I → C]. */
  down_proj: LinearLike;

  /** Parameters from `make`. */
  constructor(make: ParamFactory, c: LlamaConfig, name: string) {
    this.gate_proj = linear(make, c.nEmbd, c.nInner, `${name}.gate_proj`);
    this.up_proj = linear(make, c.nEmbd, c.nInner, `${name}.up_proj`);
    this.down_proj = linear(make, c.nInner, c.nEmbd, `${name}.down_proj`);
  }

  /** [B, T, C] → [B, T, C]. */
  forward(x: Tensor): Tensor {
    const g = this.gate_proj.forward(x);
    const u = this.up_proj.forward(x);
    const a = swiglu(g, u);
    g.dispose();
    u.dispose();
    const out = this.down_proj.forward(a);
    a.dispose();
    return out;
  }

  /** `gate_proj.*`, `up_proj.*`, `down_proj.*`. */
  namedParameters(): [string, Tensor][] {
    return [
      ...prefix("gate_proj", this.gate_proj),
      ...prefix("up_proj", this.up_proj),
      ...prefix("down_proj", this.down_proj),
    ];
  }
}

/** One pre-norm decoder layer. */
export class LlamaDecoderLayer implements Module {
  /** RMSNorm before attention. */
  input_layernorm: RMSNorm;
  /** Self-attention. */
  self_attn: LlamaAttention;
  /** RMSNorm before the MLP. */
  post_attention_layernorm: RMSNorm;
  /** The MLP. */
  mlp: LlamaMLP;

  /** Parameters from `make`. */
  constructor(make: ParamFactory, c: LlamaConfig, name: string) {
    this.self_attn = new LlamaAttention(make, c, `${name}.self_attn`);
    this.mlp = new LlamaMLP(make, c, `${name}.mlp`);
    this.input_layernorm = new RMSNorm(make, c.nEmbd, c.rmsNormEps, `${name}.input_layernorm`);
    this.post_attention_layernorm = new RMSNorm(
      make,
      c.nEmbd,
      c.rmsNormEps,
      `${name}.post_attention_layernorm`,
    );
  }

  /** x + self_attn(input_layernorm(x)), then + mlp(post_attention_layernorm(·)). */
  forward(x: Tensor): Tensor {
    const a = residual(x, this.input_layernorm, (t) => this.self_attn.forward(t));
    const out = residual(a, this.post_attention_layernorm, (t) => this.mlp.forward(t));
    a.dispose();
    return out;
  }

  /** In transformers' order: `self_attn.*`, `mlp.*`, `input_layernorm.*`, `post_attention_layernorm.*`. */
  namedParameters(): [string, Tensor][] {
    return [
      ...prefix("self_attn", this.self_attn),
      ...prefix("mlp", this.mlp),
      ...prefix("input_layernorm", this.input_layernorm),
      ...prefix("post_attention_layernorm", this.post_attention_layernorm),
    ];
  }
}

/** A LLaMA-family causal language model. */
export class Llama extends CausalLM implements LanguageModel {
  /** The device holding the parameters. */
  readonly gpu: Gpu;
  /** `LLaMA` in error messages. */
  protected readonly label = "LLaMA";
  /** `llama` (Mistral too). */
  readonly family = "llama";
  /** Sizes and constants. */
  readonly config: LlamaConfig;
  /** PEFT's default for LLaMA: `q_proj`, `v_proj`. */
  readonly loraDefaultTargets: readonly string[] = ["q_proj", "v_proj"];
  /** Every projection of a layer (the head excluded, as PEFT's `all-linear`). */
  readonly allLinear: readonly string[] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
  ];
  /** PEFT's keys for LlamaForCausalLM: `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`. */
  readonly peftPrefix = "base_model.model.";
  /** nn.Linear weights are stored [out, in]. */
  readonly fanInFanOut = false;
  /** Token embedding [V, C] (`model.embed_tokens`), also the head when tied. */
  embed_tokens: Embedding;
  /** The decoder layers (`model.layers`). */
  layers: LlamaDecoderLayer[];
  /** Final RMSNorm (`model.norm`). */
  norm: RMSNorm;
  /** The LM head [V, C] (`lm_head`), or null when tied to the embedding. */
  lm_head: Linear | null;

  /**
   * A fresh model with transformers' init drawn from `seed`, or (with `init: false`) uninitialized
   * parameters for a checkpoint loader to fill.
   */
  constructor(gpu: Gpu, config: LlamaConfig, options: { seed?: number; init?: boolean } = {}) {
    super();
    validateLlamaConfig(config);
    this.gpu = gpu;
    this.config = { ...config };
    const c = this.config;
    const make = options.init === false ? emptyParams(gpu) : initParams(gpu, new Rng(options.seed ?? 0));
    this.embed_tokens = new Embedding(make, c.vocabSize, c.nEmbd, STD, "model.embed_tokens");
    this.layers = Array.from(
      { length: c.nLayer },
      (_, i) => new LlamaDecoderLayer(make, c, `model.layers.${i}`),
    );
    this.norm = new RMSNorm(make, c.nEmbd, c.rmsNormEps, "model.norm");
    this.lm_head = c.tiedHead ? null : linear(make, c.nEmbd, c.vocabSize, "lm_head");
  }

  /** `model.embed_tokens.weight`, `model.layers.N.*`, `model.norm.weight`, `lm_head.weight` (untied only). */
  namedParameters(): [string, Tensor][] {
    return [
      ...prefix("model.embed_tokens", this.embed_tokens),
      ...this.layers.flatMap((l, i) => prefix(this.blockPrefix(i), l)),
      ...prefix("model.norm", this.norm),
      ...(this.lm_head ? prefix("lm_head", this.lm_head) : []),
    ];
  }

  /** `model.layers.i`. */
  blockPrefix(i: number): string {
    return `model.layers.${i}`;
  }

  /** Layer `i`'s seven projections. */
  linears(i: number): LinearSlot[] {
    const a = this.layers[i].self_attn;
    const m = this.layers[i].mlp;
    return [
      { path: "self_attn.q_proj", get: () => a.q_proj, set: (l) => (a.q_proj = l) },
      { path: "self_attn.k_proj", get: () => a.k_proj, set: (l) => (a.k_proj = l) },
      { path: "self_attn.v_proj", get: () => a.v_proj, set: (l) => (a.v_proj = l) },
      { path: "self_attn.o_proj", get: () => a.o_proj, set: (l) => (a.o_proj = l) },
      { path: "mlp.gate_proj", get: () => m.gate_proj, set: (l) => (m.gate_proj = l) },
      { path: "mlp.up_proj", get: () => m.up_proj, set: (l) => (m.up_proj = l) },
      { path: "mlp.down_proj", get: () => m.down_proj, set: (l) => (m.down_proj = l) },
    ];
  }

  /** The head's weight [V, C]: `lm_head.weight`, or the embedding when tied. */
  headWeight(): Tensor {
    return this.lm_head ? this.lm_head.weight : this.embed_tokens.weight;
  }

  /** Final hidden states norm(...) for `input.ids`: [B, T, C]. */
  hidden(input: ModelInput): Tensor {
    const { batchSize: b, blockSize: t } = input;
    if (this.config.slidingWindow !== undefined && t > this.config.slidingWindow) {
      throw new Error(
        `LLaMA: sequence of ${t} tokens exceeds Mistral's sliding_window ${this.config.slidingWindow}; ` +
          "sliding-window attention is not implemented, so sequences are limited to the window",
      );
    }
    checkIds("LLaMA", input, this.config.blockSize);
    const ids = fromArray(this.gpu, input.ids, [b, t], { dtype: "u32", name: "ids" });
    const x = this.embed_tokens.forward(ids, input.ids);
    ids.dispose();
    return this.throughBlocks(x, this.layers, this.norm);
  }

  /** Chooses the fused attention kernels (default) or the non-fused reference path in every layer. */
  setFusedAttention(fused: boolean): void {
    for (const l of this.layers) l.self_attn.fused = fused;
  }
}
