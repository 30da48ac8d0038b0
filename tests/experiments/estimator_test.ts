/** The memory estimator against what our accounting measures on real runs (the error is stated in the names). */
import { equal, ok } from "node:assert/strict";
import { StreamBatcher } from "../../core/data/batches.ts";
import { LisaMethod } from "../../core/finetune/lisa.ts";
import { LoraMethod } from "../../core/finetune/lora.ts";
import { FullMethod } from "../../core/finetune/full.ts";
import { train } from "../../core/finetune/trainer.ts";
import { GPT } from "../../core/nn/gpt.ts";
import { AdamW } from "../../core/optim/adamw.ts";
import { makeSchedule } from "../../core/optim/schedule.ts";
import { ARCHITECTURES, blockParams, estimate, outerParams } from "../../experiments/estimator.ts";
import { gpuTest, KERNEL_FAMILIES } from "../helpers.ts";

// Two shapes: one where the MLP's gradients are the widest transient set, one where the logits' are.
const SHAPES = [[64, 32, 3, 4, 32], [640, 24, 2, 2, 40]];

for (const [V, C, L, B, T] of SHAPES) {
  const arch = { family: "gpt2" as const, vocab: V, d: C, layers: L, heads: 2, ffn: 4 * C, positions: 128 };
  for (const method of ["full", "lora", "lisa"] as const) {
    for (const kernels of KERNEL_FAMILIES) {
      gpuTest(
        `estimated ${method} memory (V ${V}, C ${C}, ${kernels} kernels): weights, grads, optimizer exact; activations within 5%; workspace within 10%`,
        async (gpu) => {
          const model = new GPT(gpu, { vocabSize: V, blockSize: 128, nLayer: L, nHead: 2, nEmbd: C }, {
            seed: 1,
          });
          const m = method === "full"
            ? new FullMethod(model)
            : method === "lora"
            ? new LoraMethod(model, { rank: 4, alpha: 8, targets: "all-linear", seed: 1 })
            : new LisaMethod(model, { gamma: 1, period: 2, seed: 1 });
          const ids = Uint32Array.from({ length: 5000 }, (_, i) => (i * 7) % V);
          const batcher = new StreamBatcher(ids, B, T, 1);
          const opt = new AdamW(gpu);
          const r = await train({
            model,
            method: m,
            optimizer: opt,
            nextBatch: () => batcher.next(),
            schedule: makeSchedule({ kind: "constant", lr: 1e-3 }),
            steps: 3,
            maxGradNorm: 1,
          });
          opt.dispose();
          model.dispose();
          const e = estimate(arch, { method, batch: B, seq: T, rank: 4, gamma: 1, kernels });
          equal(e.weights, r.peak.weights);
          equal(e.grads, r.peak.grads);
          equal(e.optimizer, r.peak.optimizer);
          const err = (k: "activations" | "workspace") => Math.abs(e[k] - r.peak[k]) / r.peak[k];
          ok(
            err("activations") < 0.05,
            `activations: estimated ${e.activations}, measured ${r.peak.activations}`,
          );
          ok(err("workspace") < 0.1, `workspace: estimated ${e.workspace}, measured ${r.peak.workspace}`);
        },
        { kernels },
      );
    }
  }
}

Deno.test("the estimator's parameter counts are the published ones", () => {
  const count = (name: string) =>
    outerParams(ARCHITECTURES[name]) + ARCHITECTURES[name].layers * blockParams(ARCHITECTURES[name]);
  equal(count("gpt2"), 124439808); // GPT-2 small, tied head counted once
  equal(count("gpt2-medium"), 354823168);
  ok(Math.abs(count("llama2-7b") - 6.738e9) / 6.738e9 < 0.001, `llama2-7b ${count("llama2-7b")}`);
  ok(Math.abs(count("llama2-70b") - 68.98e9) / 68.98e9 < 0.001, `llama2-70b ${count("llama2-70b")}`);
  ok(Math.abs(count("tinyllama") - 1.1e9) / 1.1e9 < 0.01, `tinyllama ${count("tinyllama")}`);
});
