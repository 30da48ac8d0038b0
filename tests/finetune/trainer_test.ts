import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { StreamBatcher } from "../../core/data/batches.ts";
import { FullMethod } from "../../core/finetune/full.ts";
import { train, TrainingDivergedError } from "../../core/finetune/trainer.ts";
import { GPT } from "../../core/nn/gpt.ts";
import { AdamW } from "../../core/optim/adamw.ts";
import { makeSchedule } from "../../core/optim/schedule.ts";
import { type Gpu, GpuLostError, requestGpu } from "../../core/gpu.ts";
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
        readEvery: 1,
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

/** Losses of `steps` full fine-tuning steps of a fresh seeded model, read every `readEvery` steps. */
async function lossesReadEvery(gpu: Gpu, readEvery: number, steps: number) {
  // Sizes no other test here uses, so the first run is the one that compiles them.
  const model = new GPT(gpu, { ...CONFIG, vocabSize: 40, nEmbd: 24 }, { seed: 3 });
  const optimizer = new AdamW(gpu);
  const batcher = new StreamBatcher(Uint32Array.from({ length: 500 }, (_, i) => (i * 7) % 32), 2, 8, 5);
  const readbacks = gpu.readbacks;
  const seen: number[] = [];
  const r = await train({
    model,
    method: new FullMethod(model),
    optimizer,
    nextBatch: () => batcher.next(),
    schedule: makeSchedule({ kind: "constant", lr: 1e-3 }),
    steps,
    maxGradNorm: 1,
    readEvery,
    onStep: (s) => seen.push(s.step),
  });
  optimizer.dispose();
  model.dispose();
  return { r, seen, waits: gpu.readbacks - readbacks };
}

gpuTest(
  "losses stay on the GPU and are read once per window, the same values as read every step",
  async (gpu) => {
    const every = await lossesReadEvery(gpu, 1, 12);
    const windowed = await lossesReadEvery(gpu, 5, 12);
    deepEqual(windowed.r.steps.map((s) => s.loss), every.r.steps.map((s) => s.loss));
    deepEqual(windowed.r.steps.map((s) => s.gradNorm), every.r.steps.map((s) => s.gradNorm));
    deepEqual(windowed.seen, Array.from({ length: 12 }, (_, i) => i));
    ok(every.r.steps.every((s) => Number.isFinite(s.loss) && s.loss > 0 && s.ms > 0 && s.gradNorm! > 0));
    equal(every.waits, 12);
    equal(windowed.waits, 3); // windows of 5, 5 and 2 steps
    ok(every.r.compiles > 0 && every.r.compileMs > 0, "the first run compiles its kernels");
    equal(windowed.r.compiles, 0, "the second run reuses every pipeline");
  },
);

gpuTest("a readEvery that is not a whole number ≥ 1 is refused", async (gpu) => {
  await rejects(lossesReadEvery(gpu, 0, 2), /readEvery must be a whole number ≥ 1, got 0/);
});

Deno.test({
  name: "a device lost mid-run stops training with GpuLostError naming the step and the last checkpoint",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const gpu = await requestGpu(); // its own device: this test loses it
    const model = new GPT(gpu, CONFIG, { seed: 1 });
    const batcher = new StreamBatcher(Uint32Array.from({ length: 500 }, (_, i) => i % 32), 2, 8, 1);
    await rejects(
      train({
        model,
        method: new FullMethod(model),
        optimizer: new AdamW(gpu),
        nextBatch: () => batcher.next(),
        schedule: makeSchedule({ kind: "constant", lr: 1e-3 }),
        steps: 10,
        readEvery: 1,
        checkpointEvery: 2,
        checkpoint: (step) => Promise.resolve(`ckpt-${step}`),
        onStep: (r) => {
          if (r.step === 4) gpu.device.destroy();
        },
      }),
      (e: Error) => {
        ok(e instanceof GpuLostError, `${e.name}: ${e.message}`);
        ok(/during step \d+; last checkpoint: ckpt-4 \(after step 4\)\)$/.test(e.message), e.message);
        return true;
      },
    );
  },
});
