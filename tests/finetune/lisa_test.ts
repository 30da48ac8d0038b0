/** LISA as the paper defines it, with the memory it claims, measured by our accounting. */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { StreamBatcher } from "../../core/data/batches.ts";
import { LisaMethod, type StatePolicy, weightedSample } from "../../core/finetune/lisa.ts";
import { FullMethod } from "../../core/finetune/full.ts";
import type { FinetuneMethod } from "../../core/finetune/method.ts";
import { train, type TrainResult } from "../../core/finetune/trainer.ts";
import { GPT } from "../../core/nn/gpt.ts";
import { AdamW } from "../../core/optim/adamw.ts";
import { makeSchedule } from "../../core/optim/schedule.ts";
import { Rng } from "../../core/random.ts";
import type { Gpu } from "../../core/gpu.ts";
import { gpuTest } from "../helpers.ts";

const CONFIG = { vocabSize: 32, blockSize: 16, nLayer: 4, nHead: 2, nEmbd: 16 };
const tokens = Uint32Array.from({ length: 4000 }, (_, i) => (i * 7 + (i >> 3)) % 32);

async function run(
  gpu: Gpu,
  makeMethod: (m: GPT) => FinetuneMethod,
  steps: number,
): Promise<{ model: GPT; result: TrainResult; optimizer: AdamW }> {
  const model = new GPT(gpu, CONFIG, { seed: 1 });
  const method = makeMethod(model);
  const optimizer = new AdamW(gpu);
  const batcher = new StreamBatcher(tokens, 2, 16, 5);
  const result = await train({
    model,
    method,
    optimizer,
    nextBatch: () => batcher.next(),
    schedule: makeSchedule({ kind: "constant", lr: 1e-2 }),
    steps,
    maxGradNorm: 1,
  });
  return { model, result, optimizer };
}

/** Parameters of everything outside the blocks, and of one block. */
function sizes(model: GPT): { always: number; block: number } {
  const all = model.namedParameters();
  const always = all.filter(([n]) => !n.startsWith("h.")).reduce((s, [, t]) => s + t.size, 0);
  const block = all.filter(([n]) => n.startsWith("h.0.")).reduce((s, [, t]) => s + t.size, 0);
  return { always, block };
}

async function snapshot(model: GPT): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [n, t] of model.namedParameters()) out.set(n, await t.download());
  return out;
}

gpuTest(
  "over one period only the sampled blocks and wte/wpe/ln_f change; other blocks stay bitwise equal",
  async (gpu) => {
    const model = new GPT(gpu, CONFIG, { seed: 1 });
    const lisa = new LisaMethod(model, { gamma: 2, period: 3, seed: 4 });
    const optimizer = new AdamW(gpu);
    const batcher = new StreamBatcher(tokens, 2, 16, 5);
    const before = await snapshot(model);
    const result = await train({
      model,
      method: lisa,
      optimizer,
      nextBatch: () => batcher.next(),
      schedule: makeSchedule({ kind: "constant", lr: 1e-2 }),
      steps: 3,
    });
    const after = await snapshot(model);
    const active = result.steps[0].activeLayers;
    equal(active.length, 2);
    for (const r of result.steps) deepEqual(r.activeLayers, active, "one draw per period");
    const changed = new Set<number>();
    for (const [name, a] of before) {
      const same = a.every((v, i) => v === after.get(name)![i]);
      const block = name.match(/^h\.(\d+)\./);
      if (!block) ok(!same, `${name} (always trainable) changed`);
      else if (!same) changed.add(Number(block[1]));
    }
    deepEqual([...changed].sort(), active, "exactly the active blocks changed");
    optimizer.dispose();
    model.dispose();
  },
);

for (const policy of ["reset", "keep", "offload"] as StatePolicy[]) {
  gpuTest(
    `LISA optimizer memory with state ${policy}: exact bytes per step by our accounting`,
    async (gpu) => {
      const { model, result, optimizer } = await run(
        gpu,
        (m) => new LisaMethod(m, { gamma: 1, period: 2, state: policy, seed: 9 }),
        10,
      );
      const { always, block } = sizes(model);
      const visited = new Set<number>();
      for (const r of result.steps) {
        r.activeLayers.forEach((b) => visited.add(b));
        // 8 bytes (two f32 moments) per parameter that has state on the GPU; nothing else is optimizer.
        const expected = policy === "keep" ? 8 * (always + visited.size * block) : 8 * (always + block);
        equal(r.memory.optimizer, expected, `step ${r.step}, active ${r.activeLayers}`);
        // Frozen blocks have no gradient buffers: gradients peak at 4 bytes per trainable parameter.
        equal(r.memory.grads, 4 * (always + block), `grads at step ${r.step}`);
      }
      ok(visited.size > 1, "the draws visited more than one block");
      if (policy === "offload") {
        ok(
          optimizer.names().some((n) => optimizer.state(n)!.host !== null),
          "state of blocks that left is on the host",
        );
      }
      optimizer.dispose();
      model.dispose();
    },
  );
}

gpuTest("LISA keeps fewer activation bytes than full fine-tuning on the same batch", async (gpu) => {
  const peaks: number[] = [];
  for (
    const make of [
      (m: GPT) => new FullMethod(m),
      (m: GPT) => new LisaMethod(m, { gamma: 1, period: 5, seed: 1 }),
    ]
  ) {
    const { model, result, optimizer } = await run(gpu, make, 1);
    peaks.push(result.steps[0].memory.activations);
    optimizer.dispose();
    model.dispose();
  }
  ok(peaks[1] < peaks[0], `LISA ${peaks[1]} < Full ${peaks[0]} activation bytes`);
});

gpuTest("LISA with gamma = N gives full fine-tuning's losses step for step", async (gpu) => {
  const losses: number[][] = [];
  for (
    const make of [
      (m: GPT) => new FullMethod(m),
      (m: GPT) => new LisaMethod(m, { gamma: 4, period: 2, seed: 3 }),
    ]
  ) {
    const { model, result, optimizer } = await run(gpu, make, 6);
    losses.push(result.steps.map((r) => r.loss));
    optimizer.dispose();
    model.dispose();
  }
  deepEqual(losses[1], losses[0]);
});

Deno.test("weighted sampling draws distinct blocks in proportion to their probabilities", () => {
  const rng = new Rng(1);
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < 4000; i++) for (const b of weightedSample(rng, [1, 1, 2, 0], 2)) counts[b]++;
  equal(counts[3], 0, "zero probability is never drawn");
  ok(counts[2] > counts[0] * 1.3 && counts[2] > counts[1] * 1.3, `counts ${counts}`);
  for (let i = 0; i < 100; i++) {
    const s = weightedSample(rng, [1, 1, 1, 1, 1], 3);
    equal(new Set(s).size, 3);
  }
  throws(() => weightedSample(rng, [1, 0, 0], 2), /cannot draw 2 blocks from 1/);
});

gpuTest("LISA refuses settings that do not fit the model", (gpu) => {
  const model = new GPT(gpu, CONFIG, { seed: 1 });
  throws(
    () => new LisaMethod(model, { gamma: 5, period: 2, seed: 0 }),
    /gamma = 5 must be an integer in \[1, 4\]/,
  );
  throws(
    () => new LisaMethod(model, { gamma: 1, period: 0, seed: 0 }),
    /period = 0 must be a positive integer/,
  );
  throws(
    () => new LisaMethod(model, { gamma: 1, period: 1, probabilities: [1, 2], seed: 0 }),
    /probabilities need 4/,
  );
  model.dispose();
});
