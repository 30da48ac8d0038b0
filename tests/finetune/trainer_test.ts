import { equal, ok, rejects } from "node:assert/strict";
import { StreamBatcher } from "../../core/data/batches.ts";
import { FullMethod } from "../../core/finetune/full.ts";
import { train, TrainingDivergedError } from "../../core/finetune/trainer.ts";
import { GPT } from "../../core/nn/gpt.ts";
import { AdamW } from "../../core/optim/adamw.ts";
import { makeSchedule } from "../../core/optim/schedule.ts";
import { gpuTest } from "../helpers.ts";

const CONFIG = { vocabSize: 32, blockSize: 16, nLayer: 1, nHead: 2, nEmbd: 16 };

gpuTest(
  "a loss that stops being finite stops training, naming the step and the last checkpoint",
  async (gpu) => {
    const model = new GPT(gpu, CONFIG, { seed: 1 });
    const optimizer = new AdamW(gpu);
    const batcher = new StreamBatcher(Uint32Array.from({ length: 500 }, (_, i) => i % 32), 2, 8, 1);
    const seen: number[] = [];
    await rejects(
      train({
        model,
        method: new FullMethod(model),
        optimizer,
        nextBatch: () => batcher.next(),
        schedule: makeSchedule({ kind: "constant", lr: 1e-3 }),
        steps: 10,
        checkpointEvery: 2,
        checkpoint: (step) => Promise.resolve(`ckpt-${step}`),
        onStep: (r) => {
          seen.push(r.step);
          // Poison a weight after step 2: the loss of step 3 onwards is NaN.
          if (r.step === 2) model.ln_f.weight.upload(new Float32Array(16).fill(NaN));
        },
      }),
      (e: Error) => {
        ok(e instanceof TrainingDivergedError, e.message);
        ok(
          /loss is NaN at step [34]; last checkpoint: ckpt-(2|4) \(after step (2|4)\)/.test(e.message),
          e.message,
        );
        return true;
      },
    );
    ok(!seen.includes(5), "no step ran past the divergence by more than one");
    equal(seen[0], 0);
    optimizer.dispose();
    model.dispose();
  },
);
