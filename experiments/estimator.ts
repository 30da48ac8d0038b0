/**
 * Memory estimator: predicted peak bytes by category for a model, a method and a batch, from the
 * rules our own accounting follows. Weights, gradients and optimizer state are exact counts (4, 4 and
 * 8 bytes per f32 parameter; gradients and state only for what trains). Activations are the tensors
 * our ops save for backward, per token and layer; workspace is the largest transient set, derived
 * from what the kernels allocate: the logits' gradient and the widest activation gradient, and on
 * the software kernel family a texture copy of each for both products that read it. The tests check
 * every category against measured runs of both kernel families and state the error.
 */
import { CATEGORIES, type CategoryBytes } from "../core/memory.ts";

/** A transformer's sizes. `gpt2`: LayerNorm, GELU MLP, tied head; `llama`: RMSNorm, SwiGLU, untied head. */
export interface Architecture {
  family: "gpt2" | "llama";
  vocab: number;
  /** Model width C. */
  d: number;
  layers: number;
  heads: number;
  /** Key/value heads (grouped-query attention); default heads. */
  kvHeads?: number;
  /** MLP hidden size (4C for GPT-2). */
  ffn: number;
  /** Learned position embeddings (GPT-2's n_positions); 0 for rotary. */
  positions: number;
}

/** The models the paper reports, and ours. */
export const ARCHITECTURES: Record<string, Architecture> = {
  gpt2: { family: "gpt2", vocab: 50257, d: 768, layers: 12, heads: 12, ffn: 3072, positions: 1024 },
  "gpt2-medium": { family: "gpt2", vocab: 50257, d: 1024, layers: 24, heads: 16, ffn: 4096, positions: 1024 },
  tinyllama: {
    family: "llama",
    vocab: 32000,
    d: 2048,
    layers: 22,
    heads: 32,
    kvHeads: 4,
    ffn: 5632,
    positions: 0,
  },
  "llama2-7b": { family: "llama", vocab: 32000, d: 4096, layers: 32, heads: 32, ffn: 11008, positions: 0 },
  "llama2-70b": {
    family: "llama",
    vocab: 32000,
    d: 8192,
    layers: 80,
    heads: 64,
    kvHeads: 8,
    ffn: 28672,
    positions: 0,
  },
};

/** What is estimated. */
export interface EstimateOptions {
  method: "full" | "lora" | "lisa";
  /** Sequences per step and tokens per sequence. */
  batch: number;
  seq: number;
  /** LoRA rank and whether adapters sit on every linear layer (else attention's input projection only). */
  rank?: number;
  allLinear?: boolean;
  /** LISA: blocks trained at a time; `keep` holds state for every block (visited), else γ blocks. */
  gamma?: number;
  policy?: "reset" | "keep" | "offload";
  /** Bytes per weight (4: f32 as we train; 2 for bf16 weights); gradients and moments stay f32. */
  weightBytes?: number;
  /** The device's largest binding: logits beyond it are processed in chunks and not kept. */
  maxBinding?: number;
  /**
   * Kernel family (kernels/select.ts; default gpu): software kernels read matmul operands from
   * texture copies, which add to the workspace.
   */
  kernels?: "gpu" | "software";
}

/** Predicted peak bytes per category, and their sum. */
export type Estimate = CategoryBytes & { total: number };

interface Linear {
  inF: number;
  outF: number;
  bias: boolean;
}

function blockLinears(a: Architecture): Linear[] {
  const kv = (a.kvHeads ?? a.heads) * (a.d / a.heads);
  return a.family === "gpt2"
    ? [
      { inF: a.d, outF: 3 * a.d, bias: true },
      { inF: a.d, outF: a.d, bias: true },
      { inF: a.d, outF: a.ffn, bias: true },
      { inF: a.ffn, outF: a.d, bias: true },
    ]
    : [
      { inF: a.d, outF: a.d, bias: false },
      { inF: a.d, outF: kv, bias: false },
      { inF: a.d, outF: kv, bias: false },
      { inF: a.d, outF: a.d, bias: false },
      { inF: a.d, outF: a.ffn, bias: false },
      { inF: a.d, outF: a.ffn, bias: false },
      { inF: a.ffn, outF: a.d, bias: false },
    ];
}

/** The linears of a block that LoRA adapts: all of them, or only the first (attention's c_attn / q). */
function adaptedLinears(a: Architecture, allLinear: boolean): Linear[] {
  return allLinear ? blockLinears(a) : blockLinears(a).slice(0, 1);
}

/** Parameters of one block. */
export function blockParams(a: Architecture): number {
  const norms = a.family === "gpt2" ? 4 * a.d : 2 * a.d;
  return blockLinears(a).reduce((s, l) => s + l.inF * l.outF + (l.bias ? l.outF : 0), 0) + norms;
}

/** Parameters outside the blocks: embeddings, final norm, and an untied head. */
export function outerParams(a: Architecture): number {
  const emb = a.vocab * a.d + a.positions * a.d;
  return a.family === "gpt2" ? emb + 2 * a.d : emb + a.d + a.vocab * a.d;
}

/**
 * Floats saved per token by one block (what our ops keep for backward): `weights` when its weights
 * train (their inputs are saved), `adapters` extra LoRA inputs.
 */
function blockActivations(
  a: Architecture,
  weightsTrain: boolean,
  lora: { rank: number; allLinear: boolean } | null,
): number {
  const c = a.d, f = a.ffn, h = a.heads;
  const kv = (a.kvHeads ?? a.heads) * (c / a.heads);
  let n: number;
  if (a.family === "gpt2") {
    // x, LayerNorm stats, qkv, attention out and lse, x after attention + stats, c_fc out (GELU's input);
    // with trainable weights also ln_1/ln_2 outputs and the GELU output (matmul inputs).
    n = c + 2 + 3 * c + c + h + c + 2 + f;
    if (weightsTrain) n += c + c + f;
  } else {
    // x, RMS stat, q, k, v, attention out and lse, x2 + stat, gate, silu(gate), up; trainable: norm outputs, product.
    n = c + 1 + c + 2 * kv + c + h + c + 1 + 3 * f;
    if (weightsTrain) n += c + c + f;
  }
  if (lora) {
    // Each adapter keeps its rank-r intermediate and, when the base weights are frozen (so the base
    // kept none), its input: the norm outputs and the MLP's inner activation, or the first linear's input only.
    n += adaptedLinears(a, lora.allLinear).length * lora.rank;
    if (!weightsTrain) n += lora.allLinear ? c + c + f : c;
  }
  return n;
}

/** The predicted peak bytes by category. */
export function estimate(a: Architecture, o: EstimateOptions): Estimate {
  const tokens = o.batch * o.seq;
  const wb = o.weightBytes ?? 4;
  const block = blockParams(a), outer = outerParams(a);
  const total = outer + a.layers * block;
  const rank = o.rank ?? 8;
  const lora = o.method === "lora" ? { rank, allLinear: o.allLinear ?? true } : null;
  const adapterParams = lora
    ? a.layers * adaptedLinears(a, lora.allLinear).reduce((s, l) => s + rank * (l.inF + l.outF), 0)
    : 0;
  const gamma = Math.min(o.gamma ?? 2, a.layers);
  const trainable = o.method === "full" ? total : o.method === "lora" ? adapterParams : outer + gamma * block;
  const withState = o.method === "lisa" && o.policy === "keep" ? total : trainable;
  const trainBlocks = o.method === "full" ? a.layers : o.method === "lisa" ? gamma : 0;
  const headTrains = o.method !== "lora";
  const perToken = trainBlocks * blockActivations(a, true, null) +
    (a.layers - trainBlocks) * blockActivations(a, false, lora);
  const logitsKept = tokens * a.vocab * 4 <= (o.maxBinding ?? 128 * 2 ** 20);
  // Final norm (input + stats), its output when the head trains, logits (when kept) and their lse.
  const tail = a.d + 2 + (headTrains ? a.d : 0) + (logitsKept ? a.vocab : 0) + 1;
  const activations = 4 * tokens * (perToken + tail);
  // Backward's largest transient set, whichever phase holds more: at the head, the logits' gradient
  // (or one chunk's) with the products it feeds: the head's input gradient [rows, C] and, when the
  // head trains, the tied embedding's [V, C]; in the last block's MLP, the gradients at GELU's output and input (the widest
  // activations) with the residual stream's and LayerNorm's. Software kernels read the wide ones
  // through texture copies: one per product for the logits' gradient, one of the embedding for the
  // input's gradient, one per GELU input.
  const logitsRows = logitsKept ? tokens : Math.floor((o.maxBinding ?? 128 * 2 ** 20) / (a.vocab * 4));
  const software = (o.kernels ?? "gpu") === "software" ? 1 : 0;
  const head = (1 + 2 * software) * logitsRows * a.vocab + ((headTrains ? 1 : 0) + software) * a.vocab * a.d +
    logitsRows * a.d;
  const mlp = (2 + 2 * software) * tokens * Math.max(a.ffn, 3 * a.d) + 2 * tokens * a.d;
  const workspace = 4 * Math.max(head, mlp);
  const e: CategoryBytes = {
    weights: wb * (total + adapterParams),
    grads: 4 * trainable,
    optimizer: 8 * withState,
    activations,
    workspace,
  };
  return { ...e, total: CATEGORIES.reduce((s, c) => s + e[c], 0) };
}
