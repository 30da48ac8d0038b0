/**
 * Training checkpoints: the weights that train (a Hugging Face model folder for Full and LISA, so a
 * checkpoint is also a loadable model; PEFT adapter files for LoRA), the optimizer state
 * (optimizer.safetensors, offloaded moments included), and trainer.json (step, batcher and method
 * state with their RNG states, history), written last. A checkpoint is written into a temporary
 * folder beside its place and swapped in by two renames; a process killed at any moment leaves
 * either the old checkpoint or the new one, which {@link findCheckpoint} puts back in place.
 */
import { exists, getHost, isNotFound } from "../host.ts";
import type { AdamW } from "../optim/adamw.ts";
import type { Tensor } from "../tensor.ts";
import { CheckpointError } from "./hf.ts";
import { encodeSafetensors, type F32Tensor, readSafetensorsFile } from "./safetensors.ts";

/** What trainer.json holds. */
export interface TrainerState {
  /** Steps completed. */
  step: number;
  /** The batcher's state (its RNG included). */
  batcher: unknown;
  /** The method's state (LISA's sampler and active set, LoRA's dropout RNG). */
  method: unknown;
  /** Per-parameter AdamW step counts, by name (moments are in optimizer.safetensors). */
  optimizerSteps: Record<string, number>;
  /** Parameters whose moments were in host memory (LISA `offload`): restored there. */
  offloaded: string[];
  /** Anything else the caller wants back (config, history). */
  extra: Record<string, unknown>;
}

/** What a checkpoint is written from. */
export interface CheckpointParts {
  /** Writes the trained weights into the (new, empty) folder it is given. */
  weights: (dir: string) => Promise<void>;
  /** Whose state is saved. */
  optimizer: AdamW;
  /** The rest of trainer.json. */
  state: Omit<TrainerState, "optimizerSteps" | "offloaded">;
}

/** The phases of {@link saveCheckpoint}, in order (for fault-injection tests). */
export type CheckpointPhase = "weights" | "optimizer" | "trainer" | "swap-out" | "swap-in" | "cleanup";

/** The sibling folders of `dir` whose names start with `${basename(dir)}.${kind}-`. */
async function siblings(dir: string, kind: "tmp" | "old"): Promise<string[]> {
  const slash = dir.replace(/\/+$/, "").lastIndexOf("/");
  const parent = slash >= 0 ? dir.slice(0, slash) || "/" : ".";
  const prefix = `${dir.slice(slash + 1).replace(/\/+$/, "")}.${kind}-`;
  const out: string[] = [];
  try {
    for (const e of await getHost().readDir(parent)) {
      if (e.isDirectory && e.name.startsWith(prefix)) out.push(`${parent}/${e.name}`);
    }
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  return out.sort();
}

/**
 * Writes a checkpoint to `dir`, replacing the one there. `onPhase` is awaited before each phase
 * (tests stop the write there to check that what is left on disk is whole).
 */
export async function saveCheckpoint(
  dir: string,
  parts: CheckpointParts,
  onPhase?: (phase: CheckpointPhase) => void | Promise<void>,
): Promise<void> {
  const host = getHost();
  for (const stale of await siblings(dir, "tmp")) await host.remove(stale, { recursive: true });
  const tmp = `${dir}.tmp-${host.pid}`;
  await host.mkdir(tmp, { recursive: true });
  await onPhase?.("weights");
  await parts.weights(tmp);
  await onPhase?.("optimizer");
  const snap = await parts.optimizer.snapshot();
  const tensors: Record<string, F32Tensor> = {};
  const optimizerSteps: Record<string, number> = {};
  const offloaded: string[] = [];
  for (const s of snap) {
    tensors[`${s.name}.exp_avg`] = { shape: [...s.shape], data: s.m };
    tensors[`${s.name}.exp_avg_sq`] = { shape: [...s.shape], data: s.v };
    optimizerSteps[s.name] = s.step;
    if (s.offloaded) offloaded.push(s.name);
  }
  await host.writeFile(`${tmp}/optimizer.safetensors`, encodeSafetensors(tensors));
  await onPhase?.("trainer");
  const state: TrainerState = { ...parts.state, optimizerSteps, offloaded };
  await host.writeFile(`${tmp}/trainer.json`, new TextEncoder().encode(JSON.stringify(state) + "\n"));
  // trainer.json is written last: a folder that has it is whole.
  await onPhase?.("swap-out");
  const old = `${dir}.old-${host.pid}`;
  const had = await exists(dir);
  if (had) await host.rename(dir, old);
  await onPhase?.("swap-in");
  await host.rename(tmp, dir);
  await onPhase?.("cleanup");
  for (const o of await siblings(dir, "old")) await host.remove(o, { recursive: true });
}

/**
 * The checkpoint in `dir`, after repairing what a kill during {@link saveCheckpoint} left: when the
 * swap was cut between its two renames, the old checkpoint is moved back; half-written temporary
 * folders are removed. Returns null when there is no checkpoint.
 */
export async function findCheckpoint(dir: string): Promise<string | null> {
  const host = getHost();
  const whole = (d: string) => exists(`${d}/trainer.json`);
  if (!(await exists(dir))) {
    const olds = (await Promise.all((await siblings(dir, "old")).map(async (d) =>
      [d, await whole(d)] as const
    )))
      .filter(([, ok]) => ok);
    if (olds.length) await host.rename(olds[olds.length - 1][0], dir);
  }
  for (const stale of await siblings(dir, "tmp")) await host.remove(stale, { recursive: true });
  if (!(await exists(dir))) return null;
  if (!(await whole(dir))) {
    throw new CheckpointError(`checkpoint ${dir}: trainer.json is missing (not a checkpoint folder)`);
  }
  for (const o of await siblings(dir, "old")) await host.remove(o, { recursive: true });
  return dir;
}

/** Reads trainer.json of the checkpoint in `dir` and restores `optimizer` from it. */
export async function loadTrainerState(dir: string, optimizer: AdamW): Promise<TrainerState> {
  const path = `${dir}/trainer.json`;
  let state: TrainerState;
  try {
    state = JSON.parse(new TextDecoder().decode(await getHost().readFile(path)));
  } catch (e) {
    throw new CheckpointError(`${path}: cannot read (${(e as Error).message.split("\n")[0]})`);
  }
  const fail = (what: string) => new CheckpointError(`${path}: ${what}`);
  if (typeof state !== "object" || state === null) throw fail("not a JSON object");
  if (!Number.isInteger(state.step) || state.step < 0) {
    throw fail(`step must be a whole number, got ${state.step}`);
  }
  if (typeof state.optimizerSteps !== "object" || state.optimizerSteps === null) {
    throw fail("optimizerSteps is missing");
  }
  if (typeof state.extra !== "object" || state.extra === null) throw fail("extra is missing");
  const offloaded = new Set(Array.isArray(state.offloaded) ? state.offloaded : []);
  const names = Object.entries(state.optimizerSteps);
  const odd = names.find(([n]) => !/^[A-Za-z0-9_.]{1,200}$/.test(n));
  if (odd) {
    throw fail(
      `optimizerSteps has a parameter name that no model has: ${JSON.stringify(odd[0]).slice(0, 80)}`,
    );
  }
  if (names.length === 0) return state;
  const optPath = `${dir}/optimizer.safetensors`;
  const st = await readSafetensorsFile(optPath);
  for (const [name, step] of names) {
    const m = st.entries.get(`${name}.exp_avg`), v = st.entries.get(`${name}.exp_avg_sq`);
    if (!m || !v) throw new CheckpointError(`${optPath}: no state for ${name}`);
    const [mv, vv] = [st.getF32(`${name}.exp_avg`), st.getF32(`${name}.exp_avg_sq`)];
    // Moments that are not finite (v also ≥ 0) would turn the next update into NaN weights.
    const bad = mv.findIndex((x) => !Number.isFinite(x));
    const badV = vv.findIndex((x) => !(x >= 0 && x < Infinity));
    if (bad >= 0 || badV >= 0) {
      const [which, i, x] = bad >= 0 ? ["exp_avg", bad, mv[bad]] : ["exp_avg_sq", badV, vv[badV]];
      throw new CheckpointError(`${optPath}: ${name}.${which} holds ${x} at element ${i}`);
    }
    if (!Number.isSafeInteger(step) || step < 1) {
      throw new CheckpointError(`${path}: optimizerSteps.${name} is ${step}, expected a whole number ≥ 1`);
    }
    try {
      optimizer.load(name, m.shape, step, mv, vv, offloaded.has(name));
    } catch (e) {
      throw new CheckpointError(`${optPath}: ${(e as Error).message}`);
    }
  }
  return state;
}

/**
 * Checks that every optimizer state restored from the checkpoint in `dir` belongs to one of
 * `params` and has its shape, so a checkpoint of another model cannot be resumed onto this one.
 */
export function checkOptimizerFits(dir: string, optimizer: AdamW, params: [string, Tensor][]): void {
  const shapes = new Map(params.map(([n, t]) => [n, t.shape.join(",")]));
  for (const name of optimizer.names()) {
    const s = optimizer.state(name)!;
    const shape = (s.m?.shape ?? s.host?.shape ?? []).join(",");
    if (!shapes.has(name)) {
      throw new CheckpointError(
        `${dir}/optimizer.safetensors: state for ${name}, which the model does not have`,
      );
    }
    if (shapes.get(name) !== shape) {
      throw new CheckpointError(
        `${dir}/optimizer.safetensors: state of ${name} has shape [${shape}], the parameter [${
          shapes.get(name)
        }]`,
      );
    }
  }
}
