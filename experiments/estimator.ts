/**
 * Memory estimator: predicted peak bytes by category for a model, a method and a batch, from the
 * rules our own accounting follows. Weights, gradients and optimizer state are exact counts (4, 4 and
 * 8 bytes per f32 parameter; gradients and state only for what trains). Activations are the tensors
 * our ops save for backward, per token and layer; workspace is the largest transient set, derived
 * from what the kernels allocate: the logits' gradient and the widest activation gradients, and on
 * the software kernel family a texture copy of what those products read. Both families' rules come
 * from our ops: GPT-2's (LayerNorm, GELU) and LLaMA's (RMSNorm, rotary q/k, grouped-query attention,
 * SwiGLU; core/nn/llama.ts), and the tests check every category of each against measured runs of
 * both kernel families and state the error.
 */
import { configFromHF } from "../core/io/hf.ts";
import { llamaConfigFromHF, modelTypeOf } from "../core/nn/llama_config.ts";
import { DEFAULT_READ_EVERY } from "../core/finetune/trainer.ts";
import { CATEGORIES, type CategoryBytes } from "../core/memory.ts";
import { lmHeadChunkRows } from "../core/ops/lm_head.ts";
import { choosePackedForm } from "../core/ops/matmul_packed.ts";
import { HYPER_SLOT } from "../kernels/adamw.ts";
import { FLAT_WIDTH } from "../kernels/kernel.ts";
import type { MatmulShape } from "../kernels/matmul.ts";
import { packedLayout } from "../kernels/matmul_packed.ts";
import { COLUMN_CHUNK } from "../kernels/reduce.ts";
import { matmulPlan, readsThroughTexture } from "../kernels/select.ts";

/**
 * A transformer's sizes. `gpt2`: LayerNorm, GELU MLP, biases, tied head; `llama`: RMSNorm, rotary
 * q/k, grouped-query attention, SwiGLU MLP, no biases, untied head unless `tiedHead`.
 */
export interface Architecture {
  family: "gpt2" | "llama";
  vocab: number;
  /** Model width C. */
  d: number;
  layers: number;
  heads: number;
  /** Key/value heads (grouped-query attention); default heads. */
  kvHeads?: number;
  /** MLP hidden size (4C for GPT-2; LLaMA's intermediate_size). */
  ffn: number;
  /** Learned position embeddings (GPT-2's n_positions); 0 for rotary. */
  positions: number;
  /** The head reuses the embedding's weight (tie_word_embeddings): always for GPT-2, default false for LLaMA. */
  tiedHead?: boolean;
}

/**
 * The architecture a Hugging Face config.json object describes (model_type gpt2, llama or mistral),
 * checked as loading the model would check it, with `longest`, the longest sequence the model takes;
 * `where` names the file in errors.
 */
export function architectureFromConfig(
  raw: unknown,
  where = "config.json",
): Architecture & { longest: number } {
  if (modelTypeOf(raw, where) === "gpt2") {
    const c = configFromHF(raw, where);
    return {
      family: "gpt2",
      vocab: c.vocabSize,
      d: c.nEmbd,
      layers: c.nLayer,
      heads: c.nHead,
      ffn: 4 * c.nEmbd,
      positions: c.blockSize,
      longest: c.blockSize,
    };
  }
  const c = llamaConfigFromHF(raw, where);
  return {
    family: "llama",
    vocab: c.vocabSize,
    d: c.nEmbd,
    layers: c.nLayer,
    heads: c.nHead,
    kvHeads: c.nKvHead,
    ffn: c.nInner,
    positions: 0,
    tiedHead: c.tiedHead,
    longest: c.blockSize,
  };
}

/** The models the paper reports, and ours (sizes from each model's Hugging Face config.json). */
export const ARCHITECTURES: Record<string, Architecture> = {
  gpt2: { family: "gpt2", vocab: 50257, d: 768, layers: 12, heads: 12, ffn: 3072, positions: 1024 },
  "gpt2-medium": { family: "gpt2", vocab: 50257, d: 1024, layers: 24, heads: 16, ffn: 4096, positions: 1024 },
  // TinyLlama-1.1B: tie_word_embeddings false.
  tinyllama: {
    family: "llama",
    vocab: 32000,
    d: 2048,
    layers: 22,
    heads: 32,
    kvHeads: 4,
    ffn: 5632,
    positions: 0,
    tiedHead: false,
  },
  "llama2-7b": {
    family: "llama",
    vocab: 32000,
    d: 4096,
    layers: 32,
    heads: 32,
    ffn: 11008,
    positions: 0,
    tiedHead: false,
  },
  "llama2-70b": {
    family: "llama",
    vocab: 32000,
    d: 8192,
    layers: 80,
    heads: 64,
    kvHeads: 8,
    ffn: 28672,
    positions: 0,
    tiedHead: false,
  },
  // Mistral-7B-v0.1: LLaMA's layers with 8 key/value heads; within its 4096-token sliding window
  // attention is plain causal attention, so the rules are LLaMA's.
  "mistral-7b": {
    family: "llama",
    vocab: 32000,
    d: 4096,
    layers: 32,
    heads: 32,
    kvHeads: 8,
    ffn: 14336,
    positions: 0,
    tiedHead: false,
  },
};

/** What is estimated. */
export interface EstimateOptions {
  method: "full" | "lora" | "lisa";
  /** Sequences per step and tokens per sequence. */
  batch: number;
  seq: number;
  /**
   * LoRA rank and whether adapters sit on every linear layer of a block, else on the family's PEFT
   * default (GPT-2's c_attn; LLaMA's q_proj and v_proj).
   */
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
  /** The module's checkpoint name within a block. */
  name: string;
  inF: number;
  outF: number;
  bias: boolean;
}

/** Width of the key (or value) heads together: Hkv · head size. */
function kvWidth(a: Architecture): number {
  return (a.kvHeads ?? a.heads) * (a.d / a.heads);
}

function blockLinears(a: Architecture): Linear[] {
  const kv = kvWidth(a);
  return a.family === "gpt2"
    ? [
      { name: "attn.c_attn", inF: a.d, outF: 3 * a.d, bias: true },
      { name: "attn.c_proj", inF: a.d, outF: a.d, bias: true },
      { name: "mlp.c_fc", inF: a.d, outF: a.ffn, bias: true },
      { name: "mlp.c_proj", inF: a.ffn, outF: a.d, bias: true },
    ]
    : [
      { name: "q_proj", inF: a.d, outF: a.d, bias: false },
      { name: "k_proj", inF: a.d, outF: kv, bias: false },
      { name: "v_proj", inF: a.d, outF: kv, bias: false },
      { name: "o_proj", inF: a.d, outF: a.d, bias: false },
      { name: "gate_proj", inF: a.d, outF: a.ffn, bias: false },
      { name: "up_proj", inF: a.d, outF: a.ffn, bias: false },
      { name: "down_proj", inF: a.ffn, outF: a.d, bias: false },
    ];
}

/** The linears of a block that LoRA adapts: all of them, or PEFT's default (c_attn; q_proj and v_proj). */
function adaptedLinears(a: Architecture, allLinear: boolean): Linear[] {
  const defaults = a.family === "gpt2" ? ["attn.c_attn"] : ["q_proj", "v_proj"];
  return blockLinears(a).filter((l) => allLinear || defaults.includes(l.name));
}

/** Parameters of one block. */
export function blockParams(a: Architecture): number {
  const norms = a.family === "gpt2" ? 4 * a.d : 2 * a.d;
  return blockLinears(a).reduce((s, l) => s + l.inF * l.outF + (l.bias ? l.outF : 0), 0) + norms;
}

/** Parameters outside the blocks: embeddings, final norm, and an untied head. */
export function outerParams(a: Architecture): number {
  const emb = a.vocab * a.d + a.positions * a.d;
  return a.family === "gpt2" ? emb + 2 * a.d : emb + a.d + (a.tiedHead ? 0 : a.vocab * a.d);
}

/** Parameter tensors of one block, and outside the blocks (AdamW keeps a slot of settings per tensor). */
function tensorCounts(a: Architecture): { block: number; outer: number } {
  return a.family === "gpt2" ? { block: 12, outer: 4 } : { block: 9, outer: a.tiedHead ? 2 : 3 };
}

/** LoRA as estimated: its rank and whether every linear of a block is adapted. */
interface Lora {
  rank: number;
  allLinear: boolean;
}

/**
 * Floats saved per token by one GPT-2 block (what our ops keep for backward): `weightsTrain` when
 * its weights train (their inputs are saved), `lora` extra LoRA inputs.
 */
function gpt2BlockActivations(a: Architecture, weightsTrain: boolean, lora: Lora | null): number {
  const c = a.d, f = a.ffn, h = a.heads;
  // x, LayerNorm stats, qkv, attention out and lse, x after attention + stats, c_fc out (GELU's input);
  // with trainable weights also ln_1/ln_2 outputs and the GELU output (matmul inputs).
  let n = c + 2 + 3 * c + c + h + c + 2 + f;
  if (weightsTrain) n += c + c + f;
  if (lora) {
    // Each adapter keeps its rank-r intermediate and, when the base weights are frozen (so the base
    // kept none), its input: the norm outputs and the MLP's inner activation, or the first linear's input only.
    n += adaptedLinears(a, lora.allLinear).length * lora.rank;
    if (!weightsTrain) n += lora.allLinear ? c + c + f : c;
  }
  return n;
}

/**
 * What one LLaMA block keeps for backward (core/nn/llama.ts through its ops): floats per token, and
 * rotary tables of T · head size floats each. `inputGrad`: a gradient must reach the block's input
 * (false only for LoRA's first block, whose input comes from the frozen embedding).
 */
function llamaBlockSaved(
  a: Architecture,
  trains: boolean,
  inputGrad: boolean,
  lora: Lora | null,
): { perToken: number; tables: number } {
  const c = a.d, f = a.ffn, h = a.heads, kv = kvWidth(a);
  const all = !!lora?.allLinear;
  // Always (a gradient flows through every block): attention keeps the packed q|k|v row, its output
  // (also o_proj's input) and a log-sum-exp per head; post_attention_layernorm keeps its input and
  // 1/rms; SwiGLU keeps gate and up. rope and concatLast keep no activation.
  let n = c + 2 * kv + c + h + c + 1 + 2 * f;
  // input_layernorm keeps the block's input and 1/rms only when it records: when a gradient must
  // reach that input or its weight trains.
  if (inputGrad || trains) n += c + 1;
  // Its output is kept by q/k/v's weight gradients, or by the adapters on q (and v, k).
  if (trains || lora) n += c;
  // post_attention_layernorm's output and SwiGLU's output: read by the MLP's weight gradients or adapters.
  if (trains || all) n += c + f;
  // Each adapter keeps its scaled rank-r intermediate (scale(x·Aᵀ), B's weight gradient reads it).
  if (lora) n += adaptedLinears(a, lora.allLinear).length * lora.rank;
  // rope keeps only its cos/sin table, per call that records: q always, k when k's gradient is needed.
  const tables = inputGrad || trains || all ? 2 : 1;
  return { perToken: n, tables };
}

/**
 * The device the kernels are chosen for: lavapipe's workgroup limits and largest texture side (the
 * tests' device; common desktop GPUs grant the same). They decide split-K partials and packed textures, so small test shapes
 * come out exact; at the sizes of the paper's models neither changes the peak.
 */
const DEVICE = {
  maxComputeWorkgroupStorageSize: 32768,
  maxComputeInvocationsPerWorkgroup: 1024,
  maxTextureDimension2D: 16384,
};

/** Floats of the texture copy the software family reads a vec4 operand of `n` floats through (0: none). */
function flatCopy(n: number, software: boolean): number {
  const rows = Math.ceil(n / 4 / FLAT_WIDTH);
  const copied = software && readsThroughTexture("software", 4, n, 0, rows, DEVICE.maxTextureDimension2D);
  return copied ? rows * FLAT_WIDTH * 4 : 0;
}

/**
 * Floats a product op(A)·op(B) → [m, n] holds besides its operands and output while it runs
 * (core/ops/matmul.ts): on the GPU family the split-K partials when K is split; on the software
 * family its two packed textures, with the staging copy of an operand it transposes (pack.ts).
 */
function productExtra(
  m: number,
  n: number,
  k: number,
  transA: boolean,
  transB: boolean,
  software: boolean,
): number {
  const s: MatmulShape = { m, n, k, batch: 1, transA, transB, strideA: 0, strideB: 0 };
  const form = software ? choosePackedForm(s, DEVICE.maxTextureDimension2D) : null;
  if (!form) {
    const plan = matmulPlan(s, DEVICE);
    return plan.splits > 1 ? plan.splits * m * n : 0;
  }
  const l = packedLayout(s, form);
  const kMajor = form === "outer";
  /** Texels of an operand's texture and of its staging copy (stored rows × cols, transposed or not). */
  const operand = (rows: number, cols: number, transpose: boolean, width: number, texRows: number) => ({
    texture: width * texRows,
    staging: transpose && cols % 64 === 0 && rows <= DEVICE.maxTextureDimension2D ? (cols / 4) * rows : 0,
  });
  const x = operand(transA ? k : m, transA ? m : k, transA !== kMajor, l.xWidth, l.xRows);
  const y = operand(transB ? n : k, transB ? k : n, transB === kMajor, l.yWidth, l.yRows);
  return 4 * Math.max(x.texture + x.staging, x.texture + y.texture + y.staging);
}

/** The sizes one estimate works from. */
interface Setup {
  a: Architecture;
  o: EstimateOptions;
  tokens: number;
  lora: Lora | null;
  trainBlocks: number;
  headTrains: boolean;
  logitsKept: boolean;
  /** Logit rows alive at once: all tokens, or one chunk. */
  logitsRows: number;
  software: boolean;
}

/** GPT-2's activations and workspace, in floats. */
function gpt2Transients(s: Setup): { activations: number; workspace: number } {
  const { a, tokens, lora, trainBlocks, headTrains, logitsKept, logitsRows } = s;
  const perToken = trainBlocks * gpt2BlockActivations(a, true, null) +
    (a.layers - trainBlocks) * gpt2BlockActivations(a, false, lora);
  // Final norm (input + stats), its output when the head trains, logits (when kept) and their lse.
  const tail = a.d + 2 + (headTrains ? a.d : 0) + (logitsKept ? a.vocab : 0) + 1;
  // Backward's largest transient set, whichever phase holds more: at the head, the logits' gradient
  // (or one chunk's) with the products it feeds: the head's input gradient [rows, C] and, when the
  // head trains, the tied embedding's [V, C]; in the last block's MLP, the gradients at GELU's output and input (the widest
  // activations) with the residual stream's and LayerNorm's. Software kernels read the wide ones
  // through texture copies: one per product for the logits' gradient, one of the embedding for the
  // input's gradient, one per GELU input.
  const software = s.software ? 1 : 0;
  const head = (1 + 2 * software) * logitsRows * a.vocab + ((headTrains ? 1 : 0) + software) * a.vocab * a.d +
    logitsRows * a.d;
  const mlp = (2 + 2 * software) * tokens * Math.max(a.ffn, 3 * a.d) + 2 * tokens * a.d;
  return { activations: tokens * (perToken + tail), workspace: Math.max(head, mlp) };
}

/**
 * LLaMA's activations and workspace, in floats, from what core/nn/llama.ts's ops save and allocate
 * (a trained block keeps 6C + 2·kv + H + 3F + 2 floats per token; a frozen one 4C + 2·kv + H + 2F + 2).
 */
function llamaTransients(s: Setup, tensors: number): { activations: number; workspace: number } {
  const { a, o, tokens: n, lora, trainBlocks, headTrains, logitsKept, logitsRows, software } = s;
  const c = a.d, f = a.ffn, v = a.vocab, kv = kvWidth(a);
  const table = o.seq * (c / a.heads);
  let saved = 0;
  for (let i = 0; i < a.layers; i++) {
    // LISA's trained blocks may be any; where they sit changes nothing saved.
    const b = llamaBlockSaved(a, i < trainBlocks, !lora || i > 0, i < trainBlocks ? null : lora);
    saved += n * b.perToken + b.tables * table;
  }
  // The final norm's input and 1/rms, its output (the head's input), the logits when kept, targets,
  // mask, log-sum-exp and row loss per token; the loss and 1/Σmask.
  const activations = saved + n * (c + 1 + c + (logitsKept ? v : 0) + 4) + 2;

  // Backward's transient sets, each a moment of core/nn/llama.ts's backward: gradients are born in
  // `workspace` (a weight's until it becomes `.grad`), and every product adds what productExtra says.
  const copy = (floats: number) => flatCopy(floats, software);
  const mm = (m: number, cols: number, k: number, transA = false) =>
    productExtra(m, cols, k, transA, false, software);
  const r = n * c; // the residual stream's gradient, held through each block
  const phases: number[] = [];
  // The head: cross-entropy's backward turns the logits (or one chunk's) into their gradient; then
  // the hidden state's gradient dlogits·W and, when the head trains, its weight's dlogitsᵀ·x [V, C]
  // (chunks also hold the summed [V, C] while each chunk's part is computed).
  const rows = logitsRows;
  const head = rows * v + r + (!logitsKept && headTrains ? v * c : 0);
  phases.push(1 + rows * v + (logitsKept ? copy(rows * v) : 0), head + mm(rows, c, v));
  if (headTrains) phases.push(head + v * c + mm(v, c, rows, true));
  // The final RMSNorm: its input gradient beside the incoming one (with vec4 copies of both inputs
  // on the software family), and its weight's, summed over row chunks.
  phases.push(2 * r + 2 * copy(r) + c + (n > COLUMN_CHUNK ? Math.ceil(n / COLUMN_CHUNK) * c : 0));
  // The last block's MLP (trained when any block trains): down_proj's input gradient [N, F] (and
  // weight gradient [C, F]); SwiGLU's backward holds the gradients at its output, gate and up (with
  // vec4 copies of gate, up and the incoming gradient); then gate_proj's input gradient [N, C] (and
  // weight gradient [F, C]) beside both.
  const trains = trainBlocks > 0;
  phases.push(r + n * f + mm(n, f, c));
  if (trains) phases.push(r + n * f + c * f + mm(c, f, n, true));
  phases.push(r + 3 * n * f + 3 * copy(n * f));
  // With adapters on the MLP, the adapter's input gradient arrives beside the base's.
  phases.push(2 * r + 2 * n * f + (lora?.allLinear ? r : 0) + mm(n, c, f));
  if (trains) phases.push(2 * r + 2 * n * f + f * c + mm(f, c, n, true));
  // Attention: the fused backward holds dqkv, the per-head row sums and (software family) texture
  // copies of qkv, the output and its gradient; concatLast's backward splits dqkv into dq, dk, dv;
  // q_proj's weight gradient [C, C] comes beside dq's rotation, dk and dv.
  const qkv = n * (c + 2 * kv);
  phases.push(2 * r + qkv + n * a.heads + (software ? qkv + 2 * r : 0));
  phases.push(r + 2 * qkv);
  if (trains) phases.push(3 * r + 2 * n * kv + c * c + mm(c, c, n, true));
  // AdamW on the software family reads each parameter, its gradient and both moments through vec4
  // copies; by then the backward's uploads (the embedding's token groups) and the optimizer's
  // settings are staged too.
  if (software && tensors > 0) {
    const largest = lora
      ? Math.max(...adaptedLinears(a, lora.allLinear).map((l) => lora.rank * Math.max(l.inF, l.outF)))
      : Math.max(v * c, trains ? c * f : 0);
    const embeddingTrains = !lora;
    const uploads = (embeddingTrains ? n + 2 * Math.min(n, v) + 1 : 0) + HYPER_SLOT * tensors;
    phases.push(4 * copy(largest) + uploads);
  }
  // Always live: the trainer's loss log, AdamW's clip factor and per-tensor settings (kept from the
  // last step), and the step's uploads, staged until it is submitted: the rotary tables (every rope
  // call uploads one), targets and mask.
  const fixed = 2 * DEFAULT_READ_EVERY + 1 + HYPER_SLOT * tensors + 2 * a.layers * table + 2 * n;
  return { activations, workspace: fixed + Math.max(...phases) };
}

/** The predicted peak bytes by category. */
export function estimate(a: Architecture, o: EstimateOptions): Estimate {
  const tokens = o.batch * o.seq;
  const wb = o.weightBytes ?? 4;
  const block = blockParams(a), outer = outerParams(a);
  const total = outer + a.layers * block;
  const rank = o.rank ?? 8;
  const lora = o.method === "lora" ? { rank, allLinear: o.allLinear ?? true } : null;
  const adapted = lora ? adaptedLinears(a, lora.allLinear) : [];
  const adapterParams = a.layers * adapted.reduce((s, l) => s + rank * (l.inF + l.outF), 0);
  const gamma = Math.min(o.gamma ?? 2, a.layers);
  const trainable = o.method === "full" ? total : o.method === "lora" ? adapterParams : outer + gamma * block;
  const withState = o.method === "lisa" && o.policy === "keep" ? total : trainable;
  const trainBlocks = o.method === "full" ? a.layers : o.method === "lisa" ? gamma : 0;
  const maxBinding = o.maxBinding ?? 128 * 2 ** 20;
  const logitsKept = tokens * a.vocab * 4 <= maxBinding;
  const s: Setup = {
    a,
    o,
    tokens,
    lora,
    trainBlocks,
    headTrains: o.method !== "lora",
    logitsKept,
    logitsRows: logitsKept
      ? tokens
      : a.family === "gpt2"
      ? Math.floor(maxBinding / (a.vocab * 4))
      : lmHeadChunkRows(a.vocab, maxBinding),
    software: (o.kernels ?? "gpu") === "software",
  };
  const counts = tensorCounts(a);
  const tensors = lora ? 2 * a.layers * adapted.length : counts.outer + trainBlocks * counts.block;
  const t = a.family === "gpt2" ? gpt2Transients(s) : llamaTransients(s, tensors);
  const e: CategoryBytes = {
    weights: wb * (total + adapterParams),
    grads: 4 * trainable,
    optimizer: 8 * withState,
    activations: 4 * t.activations,
    workspace: 4 * t.workspace,
  };
  return { ...e, total: CATEGORIES.reduce((sum, c) => sum + e[c], 0) };
}
