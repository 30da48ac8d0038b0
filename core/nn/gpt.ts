/**
 * GPT-2 as Hugging Face defines it (GPT2LMHeadModel): token + position embeddings, pre-LN blocks
 * (ln_1 → causal self-attention c_attn/c_proj → residual, ln_2 → MLP c_fc/gelu_new/c_proj →
 * residual), ln_f, and an LM head tied to wte. Parameter names are the checkpoint's
 * (`h.0.attn.c_attn.weight`). Fresh models use nanoGPT's init: N(0, 0.02²), c_proj weights scaled
 * by 1/√(2·n_layer), biases 0, LayerNorms 1 and 0.
 */
import type { Gpu } from "../gpu.ts";
import { attention } from "../ops/attention.ts";
import { add } from "../ops/elementwise.ts";
import { gelu } from "../ops/gelu.ts";
import { Rng } from "../random.ts";
import { fromArray, type Tensor } from "../tensor.ts";
import {
  Embedding,
  emptyParams,
  initParams,
  LayerNorm,
  Linear,
  type LinearLike,
  type Module,
  type ParamFactory,
} from "./layers.ts";
import {
  CausalLM,
  checkIds,
  type LanguageModel,
  type LinearSlot,
  type ModelInput,
  prefix,
  residual,
} from "./model.ts";

export type { ModelInput };

/** Model sizes (Hugging Face config.json names in comments). */
export interface GPTConfig {
  /** vocab_size */
  vocabSize: number;
  /** n_positions: the longest sequence. */
  blockSize: number;
  /** n_layer */
  nLayer: number;
  /** n_head */
  nHead: number;
  /** n_embd */
  nEmbd: number;
  /** layer_norm_epsilon (default 1e-5). */
  layerNormEps?: number;
}

/** Throws unless `c` describes a model we can build. */
export function validateConfig(c: GPTConfig): void {
  for (const k of ["vocabSize", "blockSize", "nLayer", "nHead", "nEmbd"] as const) {
    if (!Number.isInteger(c[k]) || c[k] <= 0) {
      throw new Error(`GPT config: ${k} = ${c[k]} must be a positive integer`);
    }
  }
  if (c.nEmbd % c.nHead !== 0 || (c.nEmbd / c.nHead) % 4 !== 0) {
    throw new Error(
      `GPT config: n_embd ${c.nEmbd} must split into ${c.nHead} heads whose size is a multiple of 4`,
    );
  }
}

/** Causal self-attention: c_attn → attention → c_proj. */
export class Attention implements Module {
  /** Projection to q, k, v [C → 3C]. */
  c_attn: LinearLike;
  /** Output projection. */
  c_proj: LinearLike;
  /** Heads. */
  readonly nHead: number;
  /** Use the fused kernels (default) or the non-fused reference path. */
  fused = true;

  /** Parameters from `make`. */
  constructor(make: ParamFactory, c: GPTConfig, name: string) {
    this.nHead = c.nHead;
    this.c_attn = new Linear(make, c.nEmbd, 3 * c.nEmbd, 0.02, `${name}.c_attn`);
    this.c_proj = new Linear(make, c.nEmbd, c.nEmbd, 0.02 / Math.sqrt(2 * c.nLayer), `${name}.c_proj`);
  }

  /** [B, T, C] → [B, T, C]. */
  forward(x: Tensor): Tensor {
    const qkv = this.c_attn.forward(x);
    const y = attention(qkv, this.nHead, { fused: this.fused });
    qkv.dispose();
    const out = this.c_proj.forward(y);
    y.dispose();
    return out;
  }

  /** `c_attn.*`, `c_proj.*`. */
  namedParameters(): [string, Tensor][] {
    return [...prefix("c_attn", this.c_attn), ...prefix("c_proj", this.c_proj)];
  }
}

/** MLP: c_fc → gelu_new → c_proj (hidden size 4·C). */
export class MLP implements Module {
  /** Expansion [C → 4C]. */
  c_fc: LinearLike;
  /** Projection back [4C → C]. */
  c_proj: LinearLike;

  /** Parameters from `make`. */
  constructor(make: ParamFactory, c: GPTConfig, name: string) {
    this.c_fc = new Linear(make, c.nEmbd, 4 * c.nEmbd, 0.02, `${name}.c_fc`);
    this.c_proj = new Linear(make, 4 * c.nEmbd, c.nEmbd, 0.02 / Math.sqrt(2 * c.nLayer), `${name}.c_proj`);
  }

  /** [B, T, C] → [B, T, C]. */
  forward(x: Tensor): Tensor {
    const h = this.c_fc.forward(x);
    const a = gelu(h);
    h.dispose();
    const out = this.c_proj.forward(a);
    a.dispose();
    return out;
  }

  /** `c_fc.*`, `c_proj.*`. */
  namedParameters(): [string, Tensor][] {
    return [...prefix("c_fc", this.c_fc), ...prefix("c_proj", this.c_proj)];
  }
}

/** One pre-LN transformer block. */
export class Block implements Module {
  /** LayerNorm before attention. */
  ln_1: LayerNorm;
  /** Causal self-attention. */
  attn: Attention;
  /** LayerNorm before the MLP. */
  ln_2: LayerNorm;
  /** The MLP. */
  mlp: MLP;

  /** Parameters from `make`. */
  constructor(make: ParamFactory, c: GPTConfig, name: string) {
    const eps = c.layerNormEps ?? 1e-5;
    this.ln_1 = new LayerNorm(make, c.nEmbd, eps, `${name}.ln_1`);
    this.attn = new Attention(make, c, `${name}.attn`);
    this.ln_2 = new LayerNorm(make, c.nEmbd, eps, `${name}.ln_2`);
    this.mlp = new MLP(make, c, `${name}.mlp`);
  }

  /** x + attn(ln_1(x)), then + mlp(ln_2(·)). */
  forward(x: Tensor): Tensor {
    const a = residual(x, this.ln_1, (t) => this.attn.forward(t));
    const out = residual(a, this.ln_2, (t) => this.mlp.forward(t));
    a.dispose();
    return out;
  }

  /** `ln_1.*`, `attn.*`, `ln_2.*`, `mlp.*`. */
  namedParameters(): [string, Tensor][] {
    return [
      ...prefix("ln_1", this.ln_1),
      ...prefix("attn", this.attn),
      ...prefix("ln_2", this.ln_2),
      ...prefix("mlp", this.mlp),
    ];
  }
}

/** GPT-2 language model with tied LM head. */
export class GPT extends CausalLM implements LanguageModel {
  /** The device holding the parameters. */
  readonly gpu: Gpu;
  /** `GPT` in error messages. */
  protected readonly label = "GPT";
  /** `gpt2`. */
  readonly family = "gpt2";
  /** `c_attn`, PEFT's default for GPT-2. */
  readonly loraDefaultTargets: readonly string[] = ["c_attn"];
  /** Every Conv1D of a block (the tied head is not one). */
  readonly allLinear: readonly string[] = ["c_attn", "c_proj", "c_fc"];
  /** PEFT's keys for GPT2LMHeadModel: `base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`. */
  readonly peftPrefix = "base_model.model.transformer.";
  /** Conv1D weights are stored [in, out]. */
  readonly fanInFanOut = true;
  /** Sizes (layerNormEps filled in). */
  readonly config: Required<GPTConfig>;
  /** Token embedding [V, C], also the LM head. */
  wte: Embedding;
  /** Position embedding [n_positions, C]. */
  wpe: Embedding;
  /** The transformer blocks. */
  h: Block[];
  /** Final LayerNorm. */
  ln_f: LayerNorm;

  /**
   * A fresh model with nanoGPT's init drawn from `seed`, or (with `init: false`) uninitialized
   * parameters for a checkpoint loader to fill.
   */
  constructor(gpu: Gpu, config: GPTConfig, options: { seed?: number; init?: boolean } = {}) {
    super();
    validateConfig(config);
    this.gpu = gpu;
    this.config = { layerNormEps: 1e-5, ...config };
    const c = this.config;
    const make = options.init === false ? emptyParams(gpu) : initParams(gpu, new Rng(options.seed ?? 0));
    this.wte = new Embedding(make, c.vocabSize, c.nEmbd, 0.02, "wte");
    this.wpe = new Embedding(make, c.blockSize, c.nEmbd, 0.02, "wpe");
    this.h = Array.from({ length: c.nLayer }, (_, i) => new Block(make, c, `h.${i}`));
    this.ln_f = new LayerNorm(make, c.nEmbd, c.layerNormEps, "ln_f");
  }

  /** Every parameter with its checkpoint name (`wte.weight`, `h.0.attn.c_attn.weight`, ...). */
  namedParameters(): [string, Tensor][] {
    return [
      ...prefix("wte", this.wte),
      ...prefix("wpe", this.wpe),
      ...this.h.flatMap((b, i) => prefix(`h.${i}`, b)),
      ...prefix("ln_f", this.ln_f),
    ];
  }

  /** `h.i`. */
  blockPrefix(i: number): string {
    return `h.${i}`;
  }

  /** Block `i`'s `attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`. */
  linears(i: number): LinearSlot[] {
    const b = this.h[i];
    return [
      { path: "attn.c_attn", get: () => b.attn.c_attn, set: (m) => (b.attn.c_attn = m) },
      { path: "attn.c_proj", get: () => b.attn.c_proj, set: (m) => (b.attn.c_proj = m) },
      { path: "mlp.c_fc", get: () => b.mlp.c_fc, set: (m) => (b.mlp.c_fc = m) },
      { path: "mlp.c_proj", get: () => b.mlp.c_proj, set: (m) => (b.mlp.c_proj = m) },
    ];
  }

  /** Final hidden states ln_f(...) for `input.ids`: [B, T, C]. */
  hidden(input: ModelInput): Tensor {
    const { batchSize: b, blockSize: t } = input;
    checkIds("GPT", input, this.config.blockSize);
    const gpu = this.gpu;
    const ids = fromArray(gpu, input.ids, [b, t], { dtype: "u32", name: "ids" });
    const posHost = Uint32Array.from({ length: b * t }, (_, i) => i % t);
    const pos = fromArray(gpu, posHost, [b, t], { dtype: "u32", name: "positions" });
    const tok = this.wte.forward(ids, input.ids);
    const posEmb = this.wpe.forward(pos, posHost);
    const x = add(tok, posEmb);
    for (const u of [ids, pos, tok, posEmb]) u.dispose();
    return this.throughBlocks(x, this.h, this.ln_f);
  }

  /** wte: the head is tied. */
  headWeight(): Tensor {
    return this.wte.weight;
  }

  /** Chooses the fused attention kernels (default) or the non-fused reference path in every block. */
  setFusedAttention(fused: boolean): void {
    for (const b of this.h) b.attn.fused = fused;
  }
}
