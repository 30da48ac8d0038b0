/**
 * LoRA fine-tuning, matching Hugging Face PEFT: adapters on the targeted Conv1D layers (default
 * `c_attn`, PEFT's default for GPT-2; `all-linear` for c_attn, c_proj, c_fc), everything else frozen,
 * biases included. Adapters export as PEFT's `adapter_config.json` + `adapter_model.safetensors`
 * (keys `base_model.model.transformer.h.N.attn.c_attn.lora_A.weight`, A [r, in], B [out, r]), and
 * can be merged into the base weights.
 */
import { downloadParameters } from "../io/hf.ts";
import {
  encodeSafetensors,
  type F32Tensor,
  readSafetensorsFile,
  writeFileAtomic,
} from "../io/safetensors.ts";
import type { GPT } from "../nn/gpt.ts";
import { Linear } from "../nn/layers.ts";
import { type LoraConfig, LoRALinear } from "../nn/lora.ts";
import { Rng, type RngState } from "../random.ts";
import type { Tensor } from "../tensor.ts";
import { StaticMethod } from "./method.ts";

/** Module names `all-linear` stands for (every Conv1D of a block; the tied head is not one). */
export const ALL_LINEAR = ["c_attn", "c_proj", "c_fc"];

/** LoRA's settings. */
export interface LoraOptions extends LoraConfig {
  /** Module names (last segment like `c_proj`, or a suffix like `mlp.c_proj`), or `all-linear`. */
  targets?: string[] | "all-linear";
  /** Seed of A's init and of the dropout masks. */
  seed: number;
}

/** The Linear-like slots of a block, by path relative to the block. */
function slots(model: GPT, i: number) {
  const b = model.h[i];
  return [
    { path: "attn.c_attn", get: () => b.attn.c_attn, set: (m: LoRALinear) => (b.attn.c_attn = m) },
    { path: "attn.c_proj", get: () => b.attn.c_proj, set: (m: LoRALinear) => (b.attn.c_proj = m) },
    { path: "mlp.c_fc", get: () => b.mlp.c_fc, set: (m: LoRALinear) => (b.mlp.c_fc = m) },
    { path: "mlp.c_proj", get: () => b.mlp.c_proj, set: (m: LoRALinear) => (b.mlp.c_proj = m) },
  ];
}

/** Low-rank adapters on the targeted layers; only they train. */
export class LoraMethod extends StaticMethod {
  /** `lora`. */
  readonly name = "lora";
  /** Rank, alpha, dropout, rsLoRA and the target module names. */
  readonly config: Required<LoraConfig> & { targets: string[] };
  readonly #adapters: [string, LoRALinear][] = [];
  readonly #params: [string, Tensor][];
  /** Draws A's init, then every dropout mask: its state is the method's checkpoint state. */
  readonly #rng: Rng;

  /** Freezes `model` and adds adapters to its targeted layers (A drawn from `seed`). */
  constructor(model: GPT, o: LoraOptions) {
    super(model);
    const targets = o.targets === "all-linear" ? ALL_LINEAR : (o.targets ?? ["c_attn"]);
    const known = [...ALL_LINEAR, ...slots(model, 0).map((s) => s.path)];
    const unknown = targets.filter((t) => !known.includes(t));
    if (unknown.length || targets.length === 0) {
      throw new Error(
        `LoRA: unknown target module(s) ${unknown.join(", ") || "(none given)"}; GPT-2 has ${
          known.join(", ")
        }`,
      );
    }
    this.config = {
      rank: o.rank,
      alpha: o.alpha,
      dropout: o.dropout ?? 0,
      rslora: o.rslora ?? false,
      targets,
    };
    for (const [, p] of model.namedParameters()) p.requiresGrad = false;
    const rng = new Rng(o.seed);
    this.#rng = rng;
    model.h.forEach((_, i) => {
      for (const s of slots(model, i)) {
        if (!targets.some((t) => s.path === t || s.path.endsWith(`.${t}`))) continue;
        const base = s.get();
        if (!(base instanceof Linear)) throw new Error(`LoRA: h.${i}.${s.path} already has an adapter`);
        const lora = new LoRALinear(base, this.config, rng, `h.${i}.${s.path}`);
        s.set(lora);
        this.#adapters.push([`h.${i}.${s.path}`, lora]);
      }
    });
    this.#params = this.#adapters.flatMap(([, m]) => [[m.A.name, m.A], [m.B.name, m.B]]);
  }

  /** Adapters by module path (`h.0.attn.c_attn`). */
  adapters(): [string, LoRALinear][] {
    return [...this.#adapters];
  }

  /** The adapters' A and B. */
  trainable(): [string, Tensor][] {
    return this.#params;
  }

  /** The dropout RNG (A's init is drawn already; masks draw from it in training). */
  override state(): { rng: RngState } {
    return { rng: this.#rng.state() };
  }

  /** Continues the dropout masks from {@link state} (the adapters' values come from {@link importPeft}). */
  override restore(state: unknown): void {
    const s = state as { rng?: RngState } | null;
    if (!s || !Array.isArray(s.rng)) throw new Error("LoRA: not a LoRA state (expected { rng })");
    this.#rng.setState(s.rng);
  }

  /**
   * Loads A and B from a PEFT `adapter_model.safetensors` in `dir` (as {@link exportPeft} writes
   * it); every adapter must be there with its shape.
   */
  async importPeft(dir: string): Promise<void> {
    const path = `${dir}/adapter_model.safetensors`;
    const st = await readSafetensorsFile(path);
    for (const [name, t] of this.#params) {
      const key = `base_model.model.transformer.${name}`;
      const e = st.entries.get(key);
      if (!e) throw new Error(`${path}: no tensor ${key}`);
      if (e.shape.join(",") !== t.shape.join(",")) {
        throw new Error(`${path}: ${key} has shape [${e.shape}], the adapter needs [${t.shape}]`);
      }
      t.upload(st.getF32(key));
    }
  }

  /** Folds every adapter into its base weight. */
  merge(): void {
    for (const [, m] of this.#adapters) m.merge();
  }

  /** Takes every adapter back out. */
  unmerge(): void {
    for (const [, m] of this.#adapters) m.unmerge();
  }

  /** PEFT's adapter_config.json for these adapters. */
  peftConfig(baseModel = ""): Record<string, unknown> {
    return {
      peft_type: "LORA",
      task_type: "CAUSAL_LM",
      base_model_name_or_path: baseModel,
      r: this.config.rank,
      lora_alpha: this.config.alpha,
      lora_dropout: this.config.dropout,
      use_rslora: this.config.rslora,
      target_modules: this.config.targets,
      fan_in_fan_out: true,
      bias: "none",
      init_lora_weights: true,
      inference_mode: true,
      modules_to_save: null,
    };
  }

  /** Writes `adapter_config.json` and `adapter_model.safetensors` (PEFT's layout) to `dir`. */
  async exportPeft(dir: string, baseModel = ""): Promise<void> {
    await Deno.mkdir(dir, { recursive: true });
    const params = await downloadParameters(this.model, this.#params);
    const tensors: Record<string, F32Tensor> = {};
    for (const [name, t] of params) tensors[`base_model.model.transformer.${name}`] = t;
    await writeFileAtomic(`${dir}/adapter_model.safetensors`, encodeSafetensors(tensors, { format: "pt" }));
    await writeFileAtomic(
      `${dir}/adapter_config.json`,
      JSON.stringify(this.peftConfig(baseModel), null, 2) + "\n",
    );
  }
}
