/**
 * Training checkpoints: the model (Hugging Face layout, so a checkpoint is also a loadable model),
 * the optimizer state, and trainer.json (step, batcher and method state with their RNG states,
 * history). Written into a temporary folder, then swapped in by rename: a crash never leaves a half
 * checkpoint where a whole one was.
 */
import type { Gpu } from "../gpu.ts";
import type { GPT } from "../nn/gpt.ts";
import type { AdamW } from "../optim/adamw.ts";
import { type KeyStyle, loadGPT2, saveGPT2 } from "./hf.ts";
import { encodeSafetensors, type F32Tensor, readSafetensorsFile } from "./safetensors.ts";

/** What trainer.json holds. */
export interface TrainerState {
  /** Steps completed. */
  step: number;
  /** The batcher's state (its RNG included). */
  batcher: unknown;
  /** The method's state. */
  method: unknown;
  /** Per-parameter AdamW step counts, by name (moments are in optimizer.safetensors). */
  optimizerSteps: Record<string, number>;
  /** Anything else the caller wants back (config, history). */
  extra: Record<string, unknown>;
}

/** Writes a checkpoint to `dir` (replacing one that is there). */
export async function saveCheckpoint(
  dir: string,
  model: GPT,
  optimizer: AdamW,
  state: Omit<TrainerState, "optimizerSteps">,
  keyStyle: KeyStyle = "bare",
): Promise<void> {
  const tmp = `${dir}.tmp-${Deno.pid}`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await saveGPT2(model, tmp, keyStyle);
  const snap = await optimizer.snapshot();
  const tensors: Record<string, F32Tensor> = {};
  const optimizerSteps: Record<string, number> = {};
  const shapes = new Map(model.namedParameters().map(([n, t]) => [n, t.shape]));
  for (const s of snap) {
    const shape = shapes.get(s.name) ?? [s.m.length];
    tensors[`${s.name}.exp_avg`] = { shape, data: s.m };
    tensors[`${s.name}.exp_avg_sq`] = { shape, data: s.v };
    optimizerSteps[s.name] = s.step;
  }
  await Deno.writeFile(`${tmp}/optimizer.safetensors`, encodeSafetensors(tensors));
  await Deno.writeTextFile(`${tmp}/trainer.json`, JSON.stringify({ ...state, optimizerSteps }) + "\n");
  const old = `${dir}.old-${Deno.pid}`;
  const had = await Deno.stat(dir).then(() => true, () => false);
  if (had) await Deno.rename(dir, old);
  await Deno.rename(tmp, dir);
  if (had) await Deno.remove(old, { recursive: true });
}

/** Reads a checkpoint: the model, its key style, and the trainer state; restores `optimizer`. */
export async function loadCheckpoint(
  gpu: Gpu,
  dir: string,
  optimizer: AdamW,
): Promise<{ model: GPT; keyStyle: KeyStyle; state: TrainerState }> {
  let state: TrainerState;
  try {
    state = JSON.parse(await Deno.readTextFile(`${dir}/trainer.json`));
  } catch (e) {
    throw new Error(`checkpoint ${dir}: cannot read trainer.json (${(e as Error).message})`);
  }
  const { model, keyStyle } = await loadGPT2(gpu, dir);
  const st = await readSafetensorsFile(`${dir}/optimizer.safetensors`);
  for (const [name, step] of Object.entries(state.optimizerSteps)) {
    const e = st.entries.get(`${name}.exp_avg`);
    if (!e) throw new Error(`checkpoint ${dir}: optimizer.safetensors has no state for ${name}`);
    optimizer.load(name, e.shape, step, st.getF32(`${name}.exp_avg`), st.getF32(`${name}.exp_avg_sq`));
  }
  return { model, keyStyle, state };
}
