/** The memory estimator against what our accounting measures on real runs (the error is stated in the names). */
import { equal, ok } from "node:assert/strict";
import { StreamBatcher } from "../../core/data/batches.ts";
import { FullMethod } from "../../core/finetune/full.ts";
import { LisaMethod } from "../../core/finetune/lisa.ts";
import { LoraMethod } from "../../core/finetune/lora.ts";
import type { FinetuneMethod } from "../../core/finetune/method.ts";
import { train } from "../../core/finetune/trainer.ts";
import type { CategoryBytes } from "../../core/memory.ts";
import { GPT } from "../../core/nn/gpt.ts";
import { Llama } from "../../core/nn/llama.ts";
import type { LanguageModel } from "../../core/nn/model.ts";
import { AdamW } from "../../core/optim/adamw.ts";
import { makeSchedule } from "../../core/optim/schedule.ts";
import { ARCHITECTURES, blockParams, estimate, outerParams } from "../../experiments/estimator.ts";
import { gpuTest, KERNEL_FAMILIES } from "../helpers.ts";

/** Peak bytes per category over three training steps of `method` on `model` (both disposed after). */
async function measuredPeak(
  model: LanguageModel,
  method: FinetuneMethod,
  vocab: number,
  batch: number,
  seq: number,
): Promise<CategoryBytes> {
  const ids = Uint32Array.from({ length: 5000 }, (_, i) => (i * 7) % vocab);
  const batcher = new StreamBatcher(ids, batch, seq, 1);
  const opt = new AdamW(model.gpu);
  const r = await train({
    model,
    method,
    optimizer: opt,
    nextBatch: () => batcher.next(),
    schedule: makeSchedule({ kind: "constant", lr: 1e-3 }),
    steps: 3,
    maxGradNorm: 1,
  });
  opt.dispose();
  model.dispose();
  return r.peak;
}

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
          const peak = await measuredPeak(model, m, V, B, T);
          const e = estimate(arch, { method, batch: B, seq: T, rank: 4, gamma: 1, kernels });
          equal(e.weights, peak.weights);
          equal(e.grads, peak.grads);
          equal(e.optimizer, peak.optimizer);
          const err = (k: "activations" | "workspace") => Math.abs(e[k] - peak[k]) / peak[k];
          ok(
            err("activations") < 0.05,
            `activations: estimated ${e.activations}, measured ${peak.activations}`,
          );
          ok(err("workspace") < 0.1, `workspace: estimated ${e.workspace}, measured ${peak.workspace}`);
        },
        { kernels },
      );
    }
  }
}

// LLaMA (core/nn/llama.ts) with 4 query and 2 key/value heads, untied and tied heads. The first shape's
// widest transient set is the MLP's gradients (GPU kernels) or AdamW's texture copies (software); the
// second's is the logits' gradient with its products, which on the GPU kernels split K. Every
// category is predicted exactly (measured error 0 in each run), so the tests assert equality.
const LLAMA_SHAPES = [
  { vocab: 256, d: 64, ffn: 176, layers: 2, batch: 2, seq: 32 },
  { vocab: 1024, d: 32, ffn: 88, layers: 2, batch: 4, seq: 32 },
];
const LLAMA_METHODS = ["full", "lora all-linear", "lora q_proj,v_proj", "lisa"] as const;

for (const shape of LLAMA_SHAPES) {
  for (const tiedHead of [false, true]) {
    const { vocab, d, ffn, layers, batch, seq } = shape;
    const arch = {
      family: "llama" as const,
      vocab,
      d,
      layers,
      heads: 4,
      kvHeads: 2,
      ffn,
      positions: 0,
      tiedHead,
    };
    for (const variant of LLAMA_METHODS) {
      for (const kernels of KERNEL_FAMILIES) {
        const head = tiedHead ? "tied" : "untied";
        gpuTest(
          `estimated ${variant} memory (LLaMA V ${vocab}, C ${d}, ${head} head, ${kernels} kernels): every category exact`,
          async (gpu) => {
            const model = new Llama(gpu, {
              vocabSize: vocab,
              blockSize: 64,
              nLayer: layers,
              nHead: 4,
              nKvHead: 2,
              nEmbd: d,
              nInner: ffn,
              rmsNormEps: 1e-5,
              ropeTheta: 10000,
              tiedHead,
            }, { seed: 1 });
            const allLinear = variant === "lora all-linear";
            const m = variant === "full"
              ? new FullMethod(model)
              : variant === "lisa"
              ? new LisaMethod(model, { gamma: 1, period: 2, seed: 1 })
              : new LoraMethod(model, {
                rank: 4,
                alpha: 8,
                targets: allLinear ? "all-linear" : undefined,
                seed: 1,
              });
            const peak = await measuredPeak(model, m, vocab, batch, seq);
            const method = variant === "full" || variant === "lisa" ? variant : "lora";
            const e = estimate(arch, { method, batch, seq, rank: 4, allLinear, gamma: 1, kernels });
            for (const c of ["weights", "grads", "optimizer", "activations", "workspace"] as const) {
              equal(e[c], peak[c], `${c}: estimated ${e[c]}, measured ${peak[c]}`);
            }
          },
          { kernels },
        );
      }
    }
  }
}

Deno.test("the estimator's parameter counts are the published ones", () => {
  const count = (name: string) =>
    outerParams(ARCHITECTURES[name]) + ARCHITECTURES[name].layers * blockParams(ARCHITECTURES[name]);
  equal(count("gpt2"), 124439808); // GPT-2 small, tied head counted once
  equal(count("gpt2-medium"), 354823168);
  equal(count("tinyllama"), 1100048384); // untied head (tie_word_embeddings false)
  equal(count("llama2-7b"), 6738415616);
  equal(count("llama2-70b"), 68976648192);
  equal(count("mistral-7b"), 7241732096);
});

Deno.test("a tied LLaMA head counts its weight once and trains it through the embedding", () => {
  const untied = ARCHITECTURES["llama2-7b"];
  const tied = { ...untied, tiedHead: true };
  equal(outerParams(untied) - outerParams(tied), untied.vocab * untied.d);
  const o = { method: "lisa" as const, batch: 1, seq: 128, gamma: 2 };
  equal(estimate(untied, o).grads - estimate(tied, o).grads, 4 * untied.vocab * untied.d);
});
