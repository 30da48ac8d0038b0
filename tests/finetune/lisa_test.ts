/**
 * LISA as the paper defines it, with the memory it claims, measured by our accounting, on GPT-2 and
 * LLaMA alike.
 */
import { deepEqual, equal, notDeepEqual, ok, throws } from "node:assert/strict";
import { backward } from "../../core/autograd.ts";
import { StreamBatcher } from "../../core/data/batches.ts";
import { LisaMethod, type StatePolicy, weightedSample } from "../../core/finetune/lisa.ts";
import { FullMethod } from "../../core/finetune/full.ts";
import type { FinetuneMethod } from "../../core/finetune/method.ts";
import { train, type TrainResult } from "../../core/finetune/trainer.ts";
import { GPT } from "../../core/nn/gpt.ts";
import { Llama } from "../../core/nn/llama.ts";
import type { LlamaConfig } from "../../core/nn/llama_config.ts";
import type { LanguageModel } from "../../core/nn/model.ts";
import { AdamW } from "../../core/optim/adamw.ts";
import { makeSchedule } from "../../core/optim/schedule.ts";
import { Rng } from "../../core/random.ts";
import type { Gpu } from "../../core/gpu.ts";
import type { CategoryBytes } from "../../core/memory.ts";
import { tidy } from "../../core/tensor.ts";
import { gpuTest } from "../helpers.ts";

const CONFIG = { vocabSize: 32, blockSize: 16, nLayer: 4, nHead: 2, nEmbd: 16 };
/** A LLaMA of as many blocks: 4 query heads over 2 key/value heads, an odd vocabulary. */
const LLAMA: LlamaConfig = {
  vocabSize: 61,
  blockSize: 16,
  nLayer: 4,
  nHead: 4,
  nKvHead: 2,
  nEmbd: 32,
  nInner: 48,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  tiedHead: false,
};
const tokens = Uint32Array.from({ length: 4000 }, (_, i) => (i * 7 + (i >> 3)) % 32);

/**
 * GPT-2's parameter counts from its sizes alone: outside the blocks (wte, wpe, ln_f; the head is wte)
 * and in one block (ln_1, c_attn, attn.c_proj, ln_2, c_fc, mlp.c_proj, each with its bias).
 */
function gpt2Counts(
  { vocabSize: v, blockSize: t, nEmbd: c }: typeof CONFIG,
): { always: number; block: number } {
  const block = 2 * c + (3 * c * c + 3 * c) + (c * c + c) + 2 * c + (4 * c * c + 4 * c) + (4 * c * c + c);
  return { always: v * c + t * c + 2 * c, block };
}

/**
 * LLaMA's: embed_tokens, norm and an untied lm_head; in a block q, k and v (as wide as the key/value
 * heads), o, gate, up, down (no biases) and two RMSNorms.
 */
function llamaCounts(
  { vocabSize: v, nEmbd: c, nHead, nKvHead, nInner, tiedHead }: LlamaConfig,
): { always: number; block: number } {
  const kv = (c / nHead) * nKvHead;
  return {
    always: v * c + c + (tiedHead ? 0 : v * c),
    block: c * c + 2 * c * kv + c * c + 3 * c * nInner + 2 * c,
  };
}

/** Both families. */
const FAMILIES: { name: string; make: (gpu: Gpu) => LanguageModel; always: number; block: number }[] = [
  { name: "GPT-2", make: (gpu) => new GPT(gpu, CONFIG, { seed: 1 }), ...gpt2Counts(CONFIG) },
  { name: "LLaMA", make: (gpu) => new Llama(gpu, LLAMA, { seed: 1 }), ...llamaCounts(LLAMA) },
];

async function run(
  gpu: Gpu,
  makeModel: (gpu: Gpu) => LanguageModel,
  makeMethod: (m: LanguageModel) => FinetuneMethod,
  steps: number,
): Promise<{ model: LanguageModel; result: TrainResult; optimizer: AdamW; before: CategoryBytes }> {
  const model = makeModel(gpu);
  const method = makeMethod(model);
  const optimizer = new AdamW(gpu);
  const batcher = new StreamBatcher(tokens, 2, 16, 5);
  // What other tests left live, so a leak there does not fail the exact counts here.
  const before = gpu.memory.stats().live;
  const result = await train({
    model,
    method,
    optimizer,
    nextBatch: () => batcher.next(),
    schedule: makeSchedule({ kind: "constant", lr: 1e-2 }),
    steps,
    maxGradNorm: 1,
  });
  return { model, result, optimizer, before };
}

/** A block parameter's name (GPT-2's `h.3.`, LLaMA's `model.layers.3.`), capturing the block. */
const BLOCK = /^(?:h|model\.layers)\.(\d+)\./;

async function snapshot(model: LanguageModel): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [n, t] of model.namedParameters()) out.set(n, await t.download());
  return out;
}

for (const { name, make } of FAMILIES) {
  gpuTest(
    `over one period only the sampled blocks and the always-trained parameters change; other blocks stay bitwise equal (${name})`,
    async (gpu) => {
      const model = make(gpu);
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
        const block = name.match(BLOCK);
        if (!block) ok(!same, `${name} (always trainable) changed`);
        else if (!same) changed.add(Number(block[1]));
      }
      deepEqual([...changed].sort(), active, "exactly the active blocks changed");
      optimizer.dispose();
      model.dispose();
    },
  );
}

for (const { name, make, always, block } of FAMILIES) {
  for (const policy of ["reset", "keep", "offload"] as StatePolicy[]) {
    gpuTest(
      `LISA optimizer memory with state ${policy}: exact bytes per step by our accounting (${name})`,
      async (gpu) => {
        const { model, result, optimizer, before } = await run(
          gpu,
          make,
          (m) => new LisaMethod(m, { gamma: 1, period: 2, state: policy, seed: 9 }),
          10,
        );
        equal(model.parameterCount(), always + model.config.nLayer * block, "the counts cover the model");
        const visited = new Set<number>();
        for (const r of result.steps) {
          r.activeLayers.forEach((b) => visited.add(b));
          // 8 bytes (two f32 moments) per parameter that has state on the GPU; nothing else is optimizer.
          const expected = policy === "keep" ? 8 * (always + visited.size * block) : 8 * (always + block);
          equal(r.memory.optimizer - before.optimizer, expected, `step ${r.step}, active ${r.activeLayers}`);
          // Frozen blocks have no gradient buffers: gradients peak at 4 bytes per trainable parameter.
          equal(r.memory.grads - before.grads, 4 * (always + block), `grads at step ${r.step}`);
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
}

for (const { name, make } of FAMILIES) {
  gpuTest(
    `LISA keeps fewer activation bytes than full fine-tuning on the same batch (${name})`,
    async (gpu) => {
      const peaks: number[] = [];
      for (
        const method of [
          (m: LanguageModel) => new FullMethod(m),
          (m: LanguageModel) => new LisaMethod(m, { gamma: 1, period: 5, seed: 1 }),
        ]
      ) {
        const { model, result, optimizer } = await run(gpu, make, method, 1);
        peaks.push(result.steps[0].memory.activations);
        optimizer.dispose();
        model.dispose();
      }
      ok(peaks[1] < peaks[0], `LISA ${peaks[1]} < Full ${peaks[0]} activation bytes`);
    },
  );

  gpuTest(`LISA with gamma = N gives full fine-tuning's losses step for step (${name})`, async (gpu) => {
    const losses: number[][] = [];
    for (
      const method of [
        (m: LanguageModel) => new FullMethod(m),
        (m: LanguageModel) => new LisaMethod(m, { gamma: m.config.nLayer, period: 2, seed: 3 }),
      ]
    ) {
      const { model, result, optimizer } = await run(gpu, make, method, 6);
      losses.push(result.steps.map((r) => r.loss));
      optimizer.dispose();
      model.dispose();
    }
    deepEqual(losses[1], losses[0]);
  });
}

/** A LLaMA layer's parameters in transformers' order. */
const LLAMA_LAYER = [
  "self_attn.q_proj.weight",
  "self_attn.k_proj.weight",
  "self_attn.v_proj.weight",
  "self_attn.o_proj.weight",
  "mlp.gate_proj.weight",
  "mlp.up_proj.weight",
  "mlp.down_proj.weight",
  "input_layernorm.weight",
  "post_attention_layernorm.weight",
];

for (const tiedHead of [false, true]) {
  const always = ["model.embed_tokens.weight", "model.norm.weight", ...(tiedHead ? [] : ["lm_head.weight"])];
  gpuTest(
    `LISA on LLaMA (${tiedHead ? "tied" : "untied"} head) always trains ${
      always.join(", ")
    }; the active blocks train their model.layers.i parameters; frozen blocks get no gradient`,
    async (gpu) => {
      const model = new Llama(gpu, { ...LLAMA, tiedHead }, { seed: 1 });
      const { always: outer, block } = llamaCounts({ ...LLAMA, tiedHead });
      const lisa = new LisaMethod(model, { gamma: 2, period: 1, seed: 4 });
      const optimizer = new AdamW(gpu);
      await gpu.submit();
      const grads0 = gpu.memory.stats().live.grads;
      const draws: number[][] = [];
      // Two draws with no zeroGrad between them: LISA itself releases the gradients of blocks that leave.
      for (const step of [0, 1]) {
        await lisa.beginStep(step, optimizer);
        const active = lisa.activeLayers();
        draws.push(active);
        equal(active.length, 2);
        const names = lisa.trainable().map(([n]) => n);
        deepEqual(names.filter((n) => !n.startsWith("model.layers.")), always);
        deepEqual(
          names.filter((n) => n.startsWith("model.layers.")),
          active.flatMap((i) => LLAMA_LAYER.map((p) => `model.layers.${i}.${p}`)),
        );
        const ids = tokens.slice(step * 24, step * 24 + 24);
        backward(
          tidy(() => model.loss({ ids, targets: ids.map((x) => (x + 1) % 32), batchSize: 2, blockSize: 12 })),
        );
        await gpu.submit();
        for (const [n, p] of model.namedParameters()) {
          equal(
            !!p.grad,
            names.includes(n),
            `${n} has a gradient: ${!!p.grad} (step ${step}, active ${active})`,
          );
        }
        equal(
          gpu.memory.stats().live.grads - grads0,
          4 * (outer + 2 * block),
          `gradient bytes at step ${step}`,
        );
      }
      notDeepEqual(draws[0], draws[1], "the second draw changed the set");
      optimizer.dispose();
      model.dispose();
    },
  );
}

for (
  const [name, make] of [
    ["GPT-2", (gpu: Gpu) => new GPT(gpu, { ...CONFIG, nLayer: 12 }, { seed: 1 })],
    ["LLaMA", (gpu: Gpu) => new Llama(gpu, { ...LLAMA, nLayer: 12 }, { seed: 1 })],
  ] as const
) {
  gpuTest(`LISA's block 1 is not blocks 10 and 11 (${name})`, async (gpu) => {
    const model = make(gpu);
    const only1 = Array.from({ length: 12 }, (_, i) => (i === 1 ? 1 : 0));
    const lisa = new LisaMethod(model, { gamma: 1, period: 1, probabilities: only1, seed: 0 });
    const optimizer = new AdamW(gpu);
    await lisa.beginStep(0, optimizer);
    const blocks = lisa.trainable().map(([n]) => n.match(BLOCK)?.[1]).filter((b) => b);
    ok(blocks.length > 0);
    deepEqual(new Set(blocks), new Set(["1"]));
    optimizer.dispose();
    model.dispose();
  });
}

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
