/**
 * LoRA fine-tuning, matching Hugging Face PEFT: adapters on the targeted linear layers of every block
 * (PEFT's defaults: `c_attn` for GPT-2, `q_proj`, `v_proj` for LLaMA; `all-linear` for every linear
 * layer of a block, the head excluded), everything else frozen, biases included. Adapters export as
 * PEFT's `adapter_config.json` + `adapter_model.safetensors` (keys
 * `base_model.model.transformer.h.N.attn.c_attn.lora_A.weight` for GPT-2,
 * `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` for LLaMA; A [r, in], B [out, r];
 * `fan_in_fan_out` true for GPT-2's Conv1D, false for LLaMA), and can be merged into the base weights.
 */
import { getHost } from "../host.ts";
import { downloadParameters } from "../io/hf.ts";
import {
  encodeSafetensors,
  type F32Tensor,
  readSafetensorsFile,
  writeFileAtomic,
} from "../io/safetensors.ts";
import { Linear } from "../nn/layers.ts";
import { type LoraConfig, LoRALinear } from "../nn/lora.ts";
import type { LanguageModel } from "../nn/model.ts";
import { Rng, type RngState } from "../random.ts";
import type { Tensor } from "../tensor.ts";
import { StaticMethod } from "./method.ts";

/** LoRA's settings. */
export interface LoraOptions extends LoraConfig {
  /**
   * Module names (last segment like `c_proj`, or a suffix like `mlp.c_proj`), or `all-linear`;
   * default the model family's PEFT default.
   */
  targets?: string[] | "all-linear";
  /** Seed of A's init and of the dropout masks. */
  seed: number;
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
  constructor(model: LanguageModel, o: LoraOptions) {
    super(model);
    const targets = o.targets === "all-linear"
      ? [...model.allLinear]
      : (o.targets ?? [...model.loraDefaultTargets]);
    const known = [...model.allLinear, ...model.linears(0).map((s) => s.path)];
    const unknown = targets.filter((t) => !known.includes(t));
    if (unknown.length || targets.length === 0) {
      throw new Error(
        `LoRA: unknown target module(s) ${unknown.join(", ") || "(none given)"}; ${
          model.family === "gpt2" ? "GPT-2" : "LLaMA"
        } has ${known.join(", ")}`,
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
    for (let i = 0; i < model.config.nLayer; i++) {
      for (const s of model.linears(i)) {
        if (!targets.some((t) => s.path === t || s.path.endsWith(`.${t}`))) continue;
        const path = `${model.blockPrefix(i)}.${s.path}`;
        const base = s.get();
        if (!(base instanceof Linear)) throw new Error(`LoRA: ${path} already has an adapter`);
        const lora = new LoRALinear(base, this.config, rng, path);
        s.set(lora);
        this.#adapters.push([path, lora]);
      }
    }
    this.#params = this.#adapters.flatMap(([, m]) => [[m.A.name, m.A], [m.B.name, m.B]]);
  }

  /** Adapters by module path (`h.0.attn.c_attn`, `model.layers.0.self_attn.q_proj`). */
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
      const key = `${this.model.peftPrefix}${name}`;
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
      fan_in_fan_out: this.model.fanInFanOut,
      bias: "none",
      init_lora_weights: true,
      inference_mode: true,
      modules_to_save: null,
    };
  }

  /** Writes `adapter_config.json` and `adapter_model.safetensors` (PEFT's layout) to `dir`. */
  async exportPeft(dir: string, baseModel = ""): Promise<void> {
    await getHost().mkdir(dir, { recursive: true });
    const params = await downloadParameters(this.model, this.#params);
    const tensors: Record<string, F32Tensor> = {};
    for (const [name, t] of params) tensors[`${this.model.peftPrefix}${name}`] = t;
    await writeFileAtomic(`${dir}/adapter_model.safetensors`, encodeSafetensors(tensors, { format: "pt" }));
    await writeFileAtomic(
      `${dir}/adapter_config.json`,
      JSON.stringify(this.peftConfig(baseModel), null, 2) + "\n",
    );
  }
}
