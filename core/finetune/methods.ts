/**
 * The one factory that builds a fine-tuning method from its settings, used by `deno task finetune`,
 * the experiment runner and the long-run bench, so the same settings always give the same method
 * (targets, defaults and the seed it draws from).
 */
import type { LanguageModel } from "../nn/model.ts";
import { FullMethod } from "./full.ts";
import { LisaMethod, type StatePolicy } from "./lisa.ts";
import { LoraMethod } from "./lora.ts";
import type { FinetuneMethod } from "./method.ts";

/** The methods the framework implements. */
export const METHODS = ["full", "lora", "lisa"] as const;

/** One of {@link METHODS}. */
export type MethodName = typeof METHODS[number];

/**
 * Offset from the run's seed to the seed of the method's own draws (LISA's layer sampler; LoRA's A
 * init and dropout masks), so they never share a stream with the data order (seed + 1).
 */
export const METHOD_SEED_OFFSET = 2;

/** What a method is built from; unset fields take the defaults named on each. */
export interface MethodSettings {
  /** Which method. */
  method: MethodName;
  /** The run's seed (the method draws from seed + {@link METHOD_SEED_OFFSET}). */
  seed: number;
  /** LISA: blocks trained at a time, γ (default 2). */
  gamma?: number;
  /** LISA: steps between redraws, K (default 20). */
  period?: number;
  /** LISA: optimizer state of blocks leaving the active set (default `reset`). */
  state?: StatePolicy;
  /** LISA: per-block sampling weights (default uniform). */
  probabilities?: number[];
  /** LoRA: rank r (default 8). */
  rank?: number;
  /** LoRA: lora_alpha (default 2·r). */
  alpha?: number;
  /** LoRA: dropout on the adapters' input (default 0). */
  dropout?: number;
  /** LoRA: target modules (default: PEFT's for the family, `c_attn` for GPT-2, `q_proj,v_proj` for LLaMA), or `all-linear`. */
  targets?: string[] | "all-linear";
  /** LoRA: rsLoRA scaling alpha/√r. */
  rslora?: boolean;
}

/** The method `s` names, set up on `model` (this freezes or unfreezes its parameters). */
export function makeMethod(model: LanguageModel, s: MethodSettings): FinetuneMethod {
  const seed = s.seed + METHOD_SEED_OFFSET;
  switch (s.method) {
    case "full":
      return new FullMethod(model);
    case "lisa":
      return new LisaMethod(model, {
        gamma: s.gamma ?? 2,
        period: s.period ?? 20,
        state: s.state,
        probabilities: s.probabilities,
        seed,
      });
    case "lora": {
      const rank = s.rank ?? 8;
      return new LoraMethod(model, {
        rank,
        alpha: s.alpha ?? 2 * rank,
        dropout: s.dropout ?? 0,
        targets: s.targets,
        rslora: s.rslora,
        seed,
      });
    }
    default:
      throw new Error(`method ${String((s as { method: unknown }).method)}: expected ${METHODS.join(", ")}`);
  }
}
