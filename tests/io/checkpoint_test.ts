/** Checkpoints: a write stopped at any phase leaves the old checkpoint or the new one, whole. */
import { deepEqual, equal, rejects } from "node:assert/strict";
import {
  type CheckpointPhase,
  findCheckpoint,
  loadTrainerState,
  saveCheckpoint,
} from "../../core/io/checkpoint.ts";
import { CheckpointError, loadGPT2, saveGPT2 } from "../../core/io/hf.ts";
import { GPT } from "../../core/nn/gpt.ts";
import { AdamW } from "../../core/optim/adamw.ts";
import { fromArray } from "../../core/tensor.ts";
import { gpuTest } from "../helpers.ts";

const CONFIG = { vocabSize: 32, blockSize: 16, nLayer: 1, nHead: 2, nEmbd: 16 };
const PHASES: CheckpointPhase[] = ["weights", "optimizer", "trainer", "swap-out", "swap-in", "cleanup"];

class Stop extends Error {}

gpuTest(
  "a checkpoint write stopped at each phase leaves the old or the new checkpoint, whole",
  async (gpu) => {
    const dir = await Deno.makeTempDir({ prefix: "lisa-ckpt-" });
    const model = new GPT(gpu, CONFIG, { seed: 1 });
    const optimizer = new AdamW(gpu);
    try {
      const [name, p] = model.namedParameters()[0];
      p.grad = fromArray(gpu, new Float32Array(p.size).fill(0.5), p.shape);
      optimizer.step([[name, p]], 1e-2);
      const save = (step: number, onPhase?: (ph: CheckpointPhase) => void) =>
        saveCheckpoint(`${dir}/checkpoint`, {
          weights: (d) => saveGPT2(model, d),
          optimizer,
          state: { step, batcher: null, method: null, extra: {} },
        }, onPhase);
      await save(1);
      for (const [i, phase] of PHASES.entries()) {
        const step = 2 + i;
        await rejects(
          save(step, (ph) => {
            if (ph === phase) throw new Stop(phase);
          }),
          Stop,
        );
        const found = await findCheckpoint(`${dir}/checkpoint`);
        equal(found, `${dir}/checkpoint`, `stopped at ${phase}: a checkpoint is in place`);
        const restored = new AdamW(gpu);
        const state = await loadTrainerState(found!, restored);
        // Until the new folder is renamed into place the old checkpoint (step 1) is the one; after, the new.
        equal(state.step, phase === "cleanup" ? step : 1, `stopped at ${phase}`);
        deepEqual(Object.keys(state.optimizerSteps), [name]);
        equal(restored.state(name)!.step, 1);
        (await loadGPT2(gpu, found!)).model.dispose();
        const left = [...Deno.readDirSync(dir)].map((e) => e.name);
        deepEqual(left, ["checkpoint"], `stopped at ${phase}: nothing else is left after findCheckpoint`);
        restored.dispose();
      }
      await Deno.remove(`${dir}/checkpoint/trainer.json`);
      await rejects(findCheckpoint(`${dir}/checkpoint`), CheckpointError);
      equal(await findCheckpoint(`${dir}/none`), null);
    } finally {
      optimizer.dispose();
      model.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
