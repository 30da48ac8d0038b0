/**
 * The one interface every model family implements (GPT-2 in gpt.ts, LLaMA/Mistral in llama.ts), so
 * training, evaluation, generation and the fine-tuning methods never ask which family they hold:
 * parameters by checkpoint name, blocks by name prefix, each block's linear layers by path (where
 * LoRA goes), and the forward passes.
 */
import type { Gpu } from "../gpu.ts";
import { add } from "../ops/elementwise.ts";
import { lmHeadLoss } from "../ops/lm_head.ts";
import { matmul } from "../ops/matmul.ts";
import { fromArray, type Tensor } from "../tensor.ts";
import type { LinearLike, Module } from "./layers.ts";

/** Token ids and, for a loss, targets and their mask; row-major [batchSize, blockSize]. */
export interface ModelInput {
  /** Input token ids. */
  ids: Uint32Array;
  /** Next-token targets (needed for a loss). */
  targets?: Uint32Array;
  /** 1 where a target counts, 0 where it is ignored (default: all count). */
  mask?: Float32Array;
  /** Rows. */
  batchSize: number;
  /** Tokens per row. */
  blockSize: number;
}

/** The sizes every family has (each family's config adds its own). */
export interface ModelSizes {
  /** Vocabulary. */
  vocabSize: number;
  /** The longest sequence. */
  blockSize: number;
  /** Transformer blocks. */
  nLayer: number;
  /** Attention (query) heads. */
  nHead: number;
  /** Hidden size. */
  nEmbd: number;
}

/** The model families, by the checkpoint's `model_type` (Mistral is a LLaMA here). */
export type ModelFamily = "gpt2" | "llama";

/** A linear layer of a block, by its path in the block; LoRA replaces it through `set`. */
export interface LinearSlot {
  /** Path relative to the block, e.g. `attn.c_attn` or `self_attn.q_proj`. */
  path: string;
  /** The layer now in the slot. */
  get(): LinearLike;
  /** Puts `m` in the slot. */
  set(m: LinearLike): void;
}

/** A causal language model of any family. */
export interface LanguageModel extends Module {
  /** The device holding the parameters. */
  readonly gpu: Gpu;
  /** `gpt2` or `llama`. */
  readonly family: ModelFamily;
  /** Sizes. */
  readonly config: ModelSizes;
  /** LoRA's default targets for this family, as PEFT's (`c_attn` for GPT-2; `q_proj`, `v_proj` for LLaMA). */
  readonly loraDefaultTargets: readonly string[];
  /** Module names `all-linear` stands for (the head excluded, as in PEFT). */
  readonly allLinear: readonly string[];
  /** Prefix of a parameter name in a PEFT adapter file (`base_model.model.transformer.` for GPT-2). */
  readonly peftPrefix: string;
  /** Whether Linear weights are stored [in, out] (PEFT's `fan_in_fan_out`: GPT-2's Conv1D). */
  readonly fanInFanOut: boolean;
  /** Every parameter with its checkpoint name, in checkpoint order. */
  namedParameters(): [string, Tensor][];
  /** Name prefix of block `i`'s parameters, without the final dot (`h.3`, `model.layers.3`). */
  blockPrefix(i: number): string;
  /** Block `i`'s linear layers. */
  linears(i: number): LinearSlot[];
  /** Number of parameters (a tied head counted once). */
  parameterCount(): number;
  /** Final hidden states [B, T, C]. */
  hidden(input: ModelInput): Tensor;
  /** Logits [B, T, V]. */
  logits(input: ModelInput): Tensor;
  /** Mean cross-entropy of next-token prediction over the targets the mask counts (one element). */
  loss(input: ModelInput): Tensor;
  /** Chooses the fused attention kernels (default) or the non-fused reference path in every block. */
  setFusedAttention(fused: boolean): void;
  /** Frees every parameter (and its gradient). */
  dispose(): void;
}

/** Throws unless `input`'s ids fit a batch and the model's longest sequence; `who` names the model. */
export function checkIds(who: string, input: ModelInput, blockSize: number): void {
  const { batchSize: b, blockSize: t } = input;
  if (t > blockSize) {
    throw new Error(`${who}: sequence of ${t} tokens exceeds the model's longest sequence ${blockSize}`);
  }
  if (input.ids.length !== b * t) throw new Error(`${who}: ${input.ids.length} ids for a batch of ${b}×${t}`);
}

/** Throws unless `input` has targets (and a mask, if any) for every position, all inside the vocabulary. */
export function checkTargets(who: string, input: ModelInput, vocabSize: number): Uint32Array {
  const { batchSize: b, blockSize: t } = input;
  if (!input.targets) throw new Error(`${who}.loss: the input has no targets`);
  if (input.targets.length !== b * t || (input.mask && input.mask.length !== b * t)) {
    throw new Error(`${who}.loss: targets and mask need ${b * t} entries for a batch of ${b}×${t}`);
  }
  input.targets.forEach((id, i) => {
    if (id >= vocabSize) {
      throw new Error(`${who}.loss: target ${id} at position ${i} is outside the vocabulary of ${vocabSize}`);
    }
  });
  return input.targets;
}

/** `m`'s parameters with `p.` in front of each name. */
export function prefix(p: string, m: Module): [string, Tensor][] {
  return m.namedParameters().map(([n, t]) => [`${p}.${n}`, t]);
}

/** x + f(norm(x)): a pre-norm block's residual branch, intermediates freed as soon as they are used. */
export function residual(x: Tensor, norm: { forward(x: Tensor): Tensor }, f: (t: Tensor) => Tensor): Tensor {
  const n = norm.forward(x);
  const y = f(n);
  n.dispose();
  const out = add(x, y);
  y.dispose();
  return out;
}

/**
 * What every family computes the same way from its final hidden states and its head's weight [V, C]:
 * logits, the masked loss (through the chunked LM-head loss), the parameter count, disposal.
 */
export abstract class CausalLM {
  /** The device holding the parameters. */
  abstract readonly gpu: Gpu;
  /** Sizes. */
  abstract readonly config: ModelSizes;
  /** The model's name in error messages (`GPT`, `LLaMA`). */
  protected abstract readonly label: string;
  /** Every parameter with its checkpoint name. */
  abstract namedParameters(): [string, Tensor][];
  /** Final hidden states [B, T, C]. */
  abstract hidden(input: ModelInput): Tensor;
  /** The head's weight [V, C] (a tied head's is the embedding). */
  abstract headWeight(): Tensor;

  /** The blocks in turn, then the final norm: the embeddings `x` (freed here) to the final hidden states. */
  protected throughBlocks(
    x: Tensor,
    blocks: readonly { forward(x: Tensor): Tensor }[],
    finalNorm: { forward(x: Tensor): Tensor },
  ): Tensor {
    for (const block of blocks) {
      const next = block.forward(x);
      x.dispose();
      x = next;
    }
    const out = finalNorm.forward(x);
    x.dispose();
    return out;
  }

  /** Number of parameters (a tied head counted once). */
  parameterCount(): number {
    return this.namedParameters().reduce((n, [, t]) => n + t.size, 0);
  }

  /** Logits [B, T, V]. */
  logits(input: ModelInput): Tensor {
    const x = this.hidden(input);
    const out = matmul(x, this.headWeight(), { transB: true });
    x.dispose();
    return out;
  }

  /** Mean cross-entropy of next-token prediction over the targets the mask counts (one element). */
  loss(input: ModelInput): Tensor {
    const { batchSize: b, blockSize: t } = input;
    const ids = checkTargets(this.label, input, this.config.vocabSize);
    const gpu = this.gpu;
    const x = this.hidden(input);
    const targets = fromArray(gpu, ids, [b * t], { dtype: "u32", name: "targets" });
    const mask = fromArray(gpu, input.mask ?? new Float32Array(b * t).fill(1), [b * t], {
      name: "loss_mask",
    });
    const loss = lmHeadLoss(x, this.headWeight(), targets, mask);
    for (const u of [x, targets, mask]) u.dispose();
    return loss;
  }

  /** Frees every parameter (and its gradient). */
  dispose(): void {
    for (const [, t] of this.namedParameters()) t.dispose();
  }
}
