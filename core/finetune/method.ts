/**
 * The one interface every fine-tuning method implements: which parameters train at each step, and
 * what happens to optimizer state when that set changes. The training loop knows nothing else about
 * the method; a new method (GaLore, BAdam, ...) is one new file.
 */
import type { LanguageModel } from "../nn/model.ts";
import type { AdamW } from "../optim/adamw.ts";
import type { Tensor } from "../tensor.ts";

/** A fine-tuning method. */
export interface FinetuneMethod {
  /** `full`, `lora`, `lisa`, ... */
  readonly name: string;
  /**
   * Called before step `step` (0-based): sets `requiresGrad` on the model's parameters for this
   * step and, when the trainable set changes, releases, keeps or offloads the optimizer state of
   * what leaves it.
   */
  beginStep(step: number, optimizer: AdamW): Promise<void>;
  /** The parameters updated this step, with their checkpoint names. */
  trainable(): [string, Tensor][];
  /** Indices of the transformer blocks trained this step. */
  activeLayers(): number[];
  /** JSON-serializable state for checkpoints (e.g. LISA's sampler). */
  state(): unknown;
  /** Continues from {@link state}. */
  restore(state: unknown): void;
}

/**
 * A method whose trainable set never changes: nothing happens between steps, every block counts as
 * active, and there is no state to checkpoint.
 */
export abstract class StaticMethod implements FinetuneMethod {
  /** The method's name, e.g. `full`. */
  abstract readonly name: string;
  /** The model trained. */
  protected readonly model: LanguageModel;

  /** A method over `model`. */
  constructor(model: LanguageModel) {
    this.model = model;
  }

  /** Nothing changes between steps. */
  beginStep(): Promise<void> {
    return Promise.resolve();
  }

  /** The parameters updated at every step. */
  abstract trainable(): [string, Tensor][];

  /** Every block. */
  activeLayers(): number[] {
    return Array.from({ length: this.model.config.nLayer }, (_, i) => i);
  }

  /** Stateless. */
  state(): unknown {
    return null;
  }

  /** Stateless: accepts only what {@link state} gave. */
  restore(state: unknown): void {
    if (state !== null) throw new Error(`${this.name}: unexpected method state ${JSON.stringify(state)}`);
  }
}
