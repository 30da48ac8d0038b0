/**
 * LISA (Pan et al. 2024, Algorithm 1): everything outside the transformer blocks always trains
 * (GPT-2: wte, wpe, ln_f, the head tied to wte; LLaMA: embed_tokens, norm, lm_head); of the N blocks, `gamma` drawn without replacement
 * (uniformly, or with the given probabilities) are unfrozen, redrawn every `period` steps starting
 * at step 0, with one AdamW and one learning-rate schedule throughout. When a block leaves the
 * active set its optimizer state is released (`reset`: a block that comes back starts fresh, as the
 * paper's interval-by-interval runs do), kept on the GPU (`keep`, what LMFlow does: memory grows
 * with every block visited) or moved to host memory and brought back on re-entry (`offload`).
 * Frozen blocks get no gradient buffers and keep no activations that only their weights need;
 * backward still flows through them to the embeddings.
 */
import type { LanguageModel } from "../nn/model.ts";
import type { AdamW } from "../optim/adamw.ts";
import { Rng, type RngState } from "../random.ts";
import type { Tensor } from "../tensor.ts";
import type { FinetuneMethod } from "./method.ts";

/** What happens to the optimizer state of a block that leaves the active set. */
export type StatePolicy = "reset" | "keep" | "offload";

/** LISA's settings (paper names). */
export interface LisaOptions {
  /** Blocks trained at a time (γ). */
  gamma: number;
  /** Steps between redraws (K). */
  period: number;
  /** Optimizer state of blocks leaving the set (default `reset`). */
  state?: StatePolicy;
  /** Sampling weight per block (the paper's p_l); default uniform. */
  probabilities?: number[];
  /** Seed of the layer draws. */
  seed: number;
}

/** What {@link LisaMethod.state} saves. */
export interface LisaState {
  /** The sampler's RNG after the last draw. */
  rng: RngState;
  /** Blocks active since that draw. */
  active: number[];
}

/** Draws `k` distinct indices, each draw proportional to `weights` among those not yet drawn. */
export function weightedSample(rng: Rng, weights: readonly number[], k: number): number[] {
  const left = weights.map((w, i) => ({ w, i })).filter((e) => e.w > 0);
  if (k > left.length) {
    throw new Error(`LISA: cannot draw ${k} blocks from ${left.length} with positive probability`);
  }
  const out: number[] = [];
  for (let n = 0; n < k; n++) {
    const total = left.reduce((s, e) => s + e.w, 0);
    let r = rng.next() * total;
    let j = 0;
    while (j < left.length - 1 && r >= left[j].w) r -= left[j++].w;
    out.push(left[j].i);
    left.splice(j, 1);
  }
  return out;
}

/** Layerwise importance-sampled fine-tuning. */
export class LisaMethod implements FinetuneMethod {
  readonly name = "lisa";
  /** Blocks trained at a time (γ). */
  readonly gamma: number;
  /** Steps between redraws (K). */
  readonly period: number;
  /** Optimizer state policy for blocks leaving the set. */
  readonly policy: StatePolicy;
  readonly #all: [string, Tensor][];
  readonly #always: [string, Tensor][];
  readonly #blocks: [string, Tensor][][];
  readonly #weights: number[];
  #rng: Rng;
  #active: number[] = [];

  /** LISA over `model`'s blocks; every block starts frozen until the first draw. */
  constructor(model: LanguageModel, o: LisaOptions) {
    const n = model.config.nLayer;
    if (!Number.isInteger(o.gamma) || o.gamma < 1 || o.gamma > n) {
      throw new Error(`LISA: gamma = ${o.gamma} must be an integer in [1, ${n}] (the model has ${n} blocks)`);
    }
    if (!Number.isInteger(o.period) || o.period < 1) {
      throw new Error(`LISA: period = ${o.period} must be a positive integer`);
    }
    if (o.probabilities) {
      if (o.probabilities.length !== n || o.probabilities.some((p) => !(p >= 0) || !Number.isFinite(p))) {
        throw new Error(
          `LISA: probabilities need ${n} non-negative numbers, one per block; got [${o.probabilities}]`,
        );
      }
    }
    this.gamma = o.gamma;
    this.period = o.period;
    this.policy = o.state ?? "reset";
    this.#weights = o.probabilities ? [...o.probabilities] : new Array(n).fill(1);
    this.#rng = new Rng(o.seed);
    const all = model.namedParameters();
    this.#all = all;
    const blocks = Array.from({ length: n }, (_, i) => `${model.blockPrefix(i)}.`);
    this.#always = all.filter(([name]) => !blocks.some((b) => name.startsWith(b)));
    this.#blocks = blocks.map((b) => all.filter(([name]) => name.startsWith(b)));
    for (const [, p] of this.#always) p.requiresGrad = true;
    for (const block of this.#blocks) for (const [, p] of block) p.requiresGrad = false;
  }

  /** Redraws the active blocks at steps 0, K, 2K, ...; applies the state policy to leavers. */
  async beginStep(step: number, optimizer: AdamW): Promise<void> {
    // An empty active set means nothing was drawn yet (gamma >= 1).
    if (this.#active.length > 0 && step % this.period !== 0) return;
    const next = weightedSample(this.#rng, this.#weights, this.gamma).sort((a, b) => a - b);
    await this.#switch(next, optimizer);
  }

  async #switch(next: number[], optimizer: AdamW): Promise<void> {
    const leaving = this.#active.filter((b) => !next.includes(b)).flatMap((i) => this.#blocks[i]);
    for (const [name, p] of leaving) {
      p.requiresGrad = false;
      p.zeroGrad();
      if (this.policy === "reset") optimizer.release(name);
    }
    if (this.policy === "offload") await optimizer.offload(...leaving.map(([name]) => name));
    for (const i of next) for (const [, p] of this.#blocks[i]) p.requiresGrad = true;
    this.#active = next;
  }

  /** Embeddings, final norm, head and the active blocks' parameters, in the model's order (as Full lists them). */
  trainable(): [string, Tensor][] {
    return this.#all.filter(([, p]) => p.requiresGrad);
  }

  /** The active blocks, ascending. */
  activeLayers(): number[] {
    return [...this.#active];
  }

  /** The sampler's RNG and the active set. */
  state(): LisaState {
    return { rng: this.#rng.state(), active: [...this.#active] };
  }

  /** Continues from {@link state}: the same blocks stay active until the next redraw. */
  restore(state: unknown): void {
    const s = state as LisaState;
    if (!s || !Array.isArray(s.active) || !Array.isArray(s.rng)) throw new Error("LISA: not a LISA state");
    const n = this.#blocks.length;
    const ok = s.active.length === this.gamma && new Set(s.active).size === this.gamma &&
      s.active.every((i) => Number.isInteger(i) && i >= 0 && i < n && this.#weights[i] > 0);
    if (!ok) {
      throw new Error(
        `LISA: active blocks ${
          JSON.stringify(s.active)
        } are not ${this.gamma} distinct blocks of ${n} that can be drawn`,
      );
    }
    this.#rng = Rng.fromState(s.rng);
    for (const [, p] of this.#blocks.flat()) p.requiresGrad = false;
    for (const i of s.active) for (const [, p] of this.#blocks[i]) p.requiresGrad = true;
    this.#active = [...s.active];
  }
}
