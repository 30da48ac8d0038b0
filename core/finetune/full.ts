/** Full fine-tuning: every parameter trains at every step (same AdamW, schedule and clipping as the others). */
import type { LanguageModel } from "../nn/model.ts";
import type { Tensor } from "../tensor.ts";
import { StaticMethod } from "./method.ts";

/** Full fine-tuning: every parameter trains at every step. */
export class FullMethod extends StaticMethod {
  /** `full`. */
  readonly name = "full";
  readonly #params: [string, Tensor][];

  /** Trains all of `model`'s parameters. */
  constructor(model: LanguageModel) {
    super(model);
    this.#params = model.namedParameters();
    for (const [, p] of this.#params) p.requiresGrad = true;
  }

  /** All parameters. */
  trainable(): [string, Tensor][] {
    return this.#params;
  }
}
