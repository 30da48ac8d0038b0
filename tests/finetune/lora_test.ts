/**
 * LoRA as PEFT defines it, on GPT-2 (Conv1D, W [in, out]) and LLaMA (nn.Linear, W [out, in]) alike:
 * init equals the base, only A and B train, the adapter and its merge against CPU references, exact
 * gradient and optimizer bytes, PEFT's files; dropout only in training mode, so evaluation and greedy
 * decoding neither see masks nor move the generator.
 */
import { deepEqual, equal, notDeepEqual, ok, throws } from "node:assert/strict";
import { backward, noGrad } from "../../core/autograd.ts";
import { type Batch, StreamBatcher } from "../../core/data/batches.ts";
import { evaluate } from "../../core/evaluate.ts";
import { LoraMethod } from "../../core/finetune/lora.ts";
import { train } from "../../core/finetune/trainer.ts";
import { greedyComplete } from "../../core/generate.ts";
import type { Gpu } from "../../core/gpu.ts";
import { loadGPT2, saveGPT2 } from "../../core/io/hf.ts";
import { loadModel, saveModel } from "../../core/io/models.ts";
import { Safetensors } from "../../core/io/safetensors.ts";
import { GPT } from "../../core/nn/gpt.ts";
import { initParams, Linear, type WeightLayout } from "../../core/nn/layers.ts";
import { Llama } from "../../core/nn/llama.ts";
import type { LlamaConfig } from "../../core/nn/llama_config.ts";
import { LoRALinear } from "../../core/nn/lora.ts";
import type { LanguageModel } from "../../core/nn/model.ts";
import { AdamW } from "../../core/optim/adamw.ts";
import { makeSchedule } from "../../core/optim/schedule.ts";
import { Rng } from "../../core/random.ts";
import { fromArray, type Tensor, tidy } from "../../core/tensor.ts";
import { assertClose, cacheTempDir, gpuTest, hasTorch, randomArray, rng, runReference } from "../helpers.ts";

const CONFIG = { vocabSize: 32, blockSize: 16, nLayer: 2, nHead: 2, nEmbd: 16 };
const ids = Uint32Array.from({ length: 2 * 12 }, (_, i) => (i * 5 + 3) % 32);
const input = { ids, targets: ids.map((x) => (x + 7) % 32), batchSize: 2, blockSize: 12 };

/** A LLaMA about as small: 4 query heads over 2 key/value heads, an odd vocabulary, an untied head. */
const LLAMA: LlamaConfig = {
  vocabSize: 61,
  blockSize: 16,
  nLayer: 2,
  nHead: 4,
  nKvHead: 2,
  nEmbd: 32,
  nInner: 48,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  tiedHead: false,
};

const C = CONFIG.nEmbd;
/** [in, out] of each linear layer of a GPT-2 block, in `linears(i)` order, from the sizes alone. */
const GPT2_LINEARS = [[C, 3 * C], [C, C], [C, 4 * C], [4 * C, C]];
const HD = LLAMA.nEmbd / LLAMA.nHead;
/** The same for a LLaMA layer: q, k, v (k and v as wide as the key/value heads), o, gate, up, down. */
const LLAMA_LINEARS = [
  [LLAMA.nEmbd, LLAMA.nHead * HD],
  [LLAMA.nEmbd, LLAMA.nKvHead * HD],
  [LLAMA.nEmbd, LLAMA.nKvHead * HD],
  [LLAMA.nHead * HD, LLAMA.nEmbd],
  [LLAMA.nEmbd, LLAMA.nInner],
  [LLAMA.nEmbd, LLAMA.nInner],
  [LLAMA.nInner, LLAMA.nEmbd],
];

/** Both model families, each with the names its default LoRA (PEFT's) trains. */
const FAMILIES: {
  name: string;
  make: (gpu: Gpu) => LanguageModel;
  linears: number[][];
  defaultTrainable: string[];
}[] = [
  {
    name: "GPT-2",
    make: (gpu) => new GPT(gpu, CONFIG, { seed: 2 }),
    linears: GPT2_LINEARS,
    defaultTrainable: [0, 1].flatMap((i) => ["A", "B"].map((m) => `h.${i}.attn.c_attn.lora_${m}.weight`)),
  },
  {
    name: "LLaMA",
    make: (gpu) => new Llama(gpu, LLAMA, { seed: 2 }),
    linears: LLAMA_LINEARS,
    defaultTrainable: [0, 1].flatMap((i) =>
      ["q_proj", "v_proj"].flatMap((p) =>
        ["A", "B"].map((m) => `model.layers.${i}.self_attn.${p}.lora_${m}.weight`)
      )
    ),
  },
];

/**
 * W + s·B·A computed on the CPU, laid out as W is: [out, in] adds B·A, [in, out] (Conv1D) adds
 * (B·A)ᵀ. A is [r, in], B [out, r].
 */
function mergedRef(
  w: Float32Array,
  a: Float32Array,
  b: Float32Array,
  s: number,
  [inF, outF, r]: number[],
  layout: WeightLayout,
): Float64Array {
  return Float64Array.from(w, (v, k) => {
    const [o, i] = layout === "out_in" ? [Math.floor(k / inF), k % inF] : [k % outF, Math.floor(k / outF)];
    let d = 0;
    for (let j = 0; j < r; j++) d += b[o * r + j] * a[j * inF + i];
    return v + s * d;
  });
}

async function lossOf(model: LanguageModel): Promise<number> {
  const l = noGrad(() => tidy(() => model.loss(input)));
  const v = (await l.download())[0];
  l.dispose();
  return v;
}

async function trainSteps(
  model: LanguageModel,
  trainable: [string, Tensor][],
  steps: number,
  lr = 0.05,
): Promise<void> {
  const opt = new AdamW(model.gpu);
  for (let i = 0; i < steps; i++) {
    backward(tidy(() => model.loss(input)));
    opt.step(trainable, lr);
    for (const [, p] of trainable) p.zeroGrad();
  }
  await model.gpu.submit();
  opt.dispose();
}

/** Two validation batches (every target counted) unlike the training input. */
const valBatches: Batch[] = [11, 13].map((k) => {
  const ids = Uint32Array.from({ length: 2 * 12 }, (_, i) => (i * k + 1) % 32);
  return {
    ids,
    targets: ids.map((x) => (x + 3) % 32),
    mask: new Float32Array(24).fill(1),
    batchSize: 2,
    blockSize: 12,
  };
});

/** Rank-4 adapters on every block's c_attn and mlp.c_fc, A and masks from `rng`; the rest frozen. */
function adapt(model: GPT, dropout: number, rng: Rng): [string, Tensor][] {
  for (const [, p] of model.namedParameters()) p.requiresGrad = false;
  const wrap = (base: unknown, name: string) => {
    if (!(base instanceof Linear)) throw new Error(`${name} is not a Linear`);
    return new LoRALinear(base, { rank: 4, alpha: 8, dropout }, rng, name);
  };
  return model.h.flatMap((b, i) => {
    const attn = (b.attn.c_attn = wrap(b.attn.c_attn, `h.${i}.attn.c_attn`));
    const fc = (b.mlp.c_fc = wrap(b.mlp.c_fc, `h.${i}.mlp.c_fc`));
    return [attn.A, attn.B, fc.A, fc.B].map((t): [string, Tensor] => [t.name, t]);
  });
}

/**
 * The same trained adapters twice: `on` with dropout 0.5 (trained with it, masks from `rng`) and
 * `off`, a copy with dropout 0. B is far from 0, so a dropout mask would move every output.
 */
async function trainedPair(gpu: Gpu): Promise<{ on: GPT; off: GPT; rng: Rng }> {
  const rng = new Rng(1);
  const on = new GPT(gpu, CONFIG, { seed: 2 });
  const trained = adapt(on, 0.5, rng);
  await trainSteps(on, trained, 8, 0.1);
  const off = new GPT(gpu, CONFIG, { seed: 2 });
  const copies = adapt(off, 0, new Rng(1));
  for (const [i, [, t]] of copies.entries()) t.upload(await trained[i][1].download());
  const b = await trained[1][1].download();
  ok(Math.max(...b.map(Math.abs)) > 0.3, `B is trained away from 0 (max |B| = ${Math.max(...b)})`);
  return { on, off, rng };
}

for (const { name, make } of FAMILIES) {
  gpuTest(`LoRA at init (B = 0) gives exactly the base model's loss (${name})`, async (gpu) => {
    const model = make(gpu);
    const base = await lossOf(model);
    new LoraMethod(model, { rank: 4, alpha: 8, targets: "all-linear", seed: 1 });
    equal(await lossOf(model), base);
    model.dispose();
  });
}

gpuTest(
  "with B ≠ 0, dropout moves the training-mode loss but evaluate equals the dropout-0 loss, every time",
  async (gpu) => {
    const { on, off } = await trainedPair(gpu);
    const reference = (await evaluate(off, valBatches)).loss;
    const first = (await evaluate(on, valBatches)).loss;
    const second = (await evaluate(on, valBatches)).loss;
    equal(first, reference, "evaluate with dropout 0.5 vs dropout 0");
    equal(second, first, "evaluate twice in a row");
    // The training-mode forward does drop: its loss differs from the dropout-0 one on the same input.
    const dropped = await lossOf(on);
    const kept = await lossOf(off);
    ok(Math.abs(dropped - kept) > 1e-3, `training-mode loss ${dropped} vs dropout-0 ${kept}`);
    on.dispose();
    off.dispose();
  },
);

gpuTest("evaluate and greedyComplete draw nothing from the LoRA generator", async (gpu) => {
  const { on, off, rng } = await trainedPair(gpu);
  const before = rng.state();
  await evaluate(on, valBatches);
  deepEqual(rng.state(), before, "evaluate moved the generator");
  await greedyComplete(on, [[1, 2, 3], [7]], { maxNew: 4, batchSize: 2, blockSize: CONFIG.blockSize });
  deepEqual(rng.state(), before, "greedyComplete moved the generator");
  // The same generator does draw the masks of a training-mode forward.
  await lossOf(on);
  notDeepEqual(rng.state(), before);
  on.dispose();
  off.dispose();
});

gpuTest("greedy decoding with LoRA dropout 0.5 equals decoding with dropout 0", async (gpu) => {
  const { on, off } = await trainedPair(gpu);
  const prompts = [[1, 2, 3], [7], [4, 9, 12, 30, 5], [20, 21], [6, 6, 6], [31]];
  const o = { maxNew: 8, batchSize: 3, blockSize: CONFIG.blockSize };
  const reference = await greedyComplete(off, prompts, o);
  deepEqual(await greedyComplete(on, prompts, o), reference);
  deepEqual(await greedyComplete(on, prompts, o), reference);
  on.dispose();
  off.dispose();
});

for (const { name, make, defaultTrainable } of FAMILIES) {
  gpuTest(
    `LoRA trains only A and B: base weights, biases, norms, embeddings and head get no gradient (${name})`,
    (gpu) => {
      const model = make(gpu);
      const lora = new LoraMethod(model, { rank: 4, alpha: 8, seed: 1 });
      const loss = tidy(() => model.loss(input));
      backward(loss);
      for (const [name, p] of model.namedParameters()) {
        equal(!!p.grad, name.includes(".lora_"), `${name} has a gradient: ${!!p.grad}`);
      }
      deepEqual(lora.trainable().map(([n]) => n), defaultTrainable);
      model.dispose();
    },
  );
}

// Non-square, so a merge of the other layout's formula could not even add; the sizes of LLaMA's
// k_proj and GPT-2's c_attn, whose kernels the model tests compile.
const PROBES = [
  { layout: "out_in", bias: false, inF: 32, outF: 16 },
  { layout: "in_out", bias: true, inF: 16, outF: 48 },
] as const;

for (const { layout, bias, inF, outF } of PROBES) {
  gpuTest(
    `an adapter on an ${layout} Linear computes x·W + b + s·x·Aᵀ·Bᵀ and merges W + s·${
      layout === "out_in" ? "B·A" : "(B·A)ᵀ"
    }, as on the CPU`,
    async (gpu) => {
      const [r, alpha, rows] = [4, 16, 24];
      const base = new Linear(initParams(gpu, new Rng(5)), inF, outF, 0.5, "probe", { bias, layout });
      const lora = new LoRALinear(base, { rank: r, alpha }, new Rng(6), "probe");
      const rand = rng(7);
      lora.B.upload(randomArray(rand, outF * r));
      base.bias?.upload(randomArray(rand, outF));
      const xs = randomArray(rand, rows * inF);
      const x = fromArray(gpu, xs, [rows, inF]);
      const [w, a, b] = await Promise.all([base.weight, lora.A, lora.B].map((t) => t.download()));
      const bv = base.bias ? await base.bias.download() : new Float32Array(outF);
      const wAt = (o: number, i: number) => layout === "out_in" ? w[o * inF + i] : w[i * outF + o];
      const expected = new Float64Array(rows * outF);
      for (let n = 0; n < rows; n++) {
        const xa = Array.from({ length: r }, (_, j) => {
          let t = 0;
          for (let i = 0; i < inF; i++) t += xs[n * inF + i] * a[j * inF + i];
          return t;
        });
        for (let o = 0; o < outF; o++) {
          let y = bv[o];
          for (let i = 0; i < inF; i++) y += xs[n * inF + i] * wAt(o, i);
          for (let j = 0; j < r; j++) y += lora.scaling * xa[j] * b[o * r + j];
          expected[n * outF + o] = y;
        }
      }
      equal(lora.scaling, alpha / r);
      const forward = async () => {
        const y = noGrad(() => lora.forward(x));
        const v = await y.download();
        y.dispose();
        return v;
      };
      const unmerged = await forward();
      assertClose(unmerged, expected, { what: "adapter forward" });
      lora.merge();
      assertClose(await base.weight.download(), mergedRef(w, a, b, lora.scaling, [inF, outF, r], layout), {
        what: "merged W",
      });
      assertClose(await forward(), unmerged, { what: "merged forward" });
      lora.unmerge();
      assertClose(await base.weight.download(), w, { atol: 1e-6, what: "W after unmerge" });
      for (const t of [x, lora.A, lora.B, ...base.namedParameters().map(([, p]) => p)]) t.dispose();
    },
  );
}

for (const { name, make } of FAMILIES) {
  gpuTest(
    `after training, the merged weights are W + s·ΔW on the CPU and score as unmerged; unmerge restores the base (${name})`,
    async (gpu) => {
      const model = make(gpu);
      const targets = model.family === "gpt2" ? ["c_attn", "mlp.c_proj"] : "all-linear";
      const lora = new LoraMethod(model, { rank: 4, alpha: 16, targets, seed: 1 });
      await trainSteps(model, lora.trainable(), 3);
      const adapters = lora.adapters();
      equal(adapters.length, model.family === "gpt2" ? 4 : 14);
      const before = await Promise.all(adapters.map(([, m]) => m.base.weight.download()));
      const factors = await Promise.all(
        adapters.map(async ([, m]) => [await m.A.download(), await m.B.download()]),
      );
      const unmerged = await lossOf(model);
      lora.merge();
      const merged = await lossOf(model);
      ok(Math.abs(merged - unmerged) < 1e-5 * unmerged, `merged ${merged} vs unmerged ${unmerged}`);
      for (const [k, [path, m]] of adapters.entries()) {
        const [a, b] = factors[k];
        ok(b.some((v) => Math.abs(v) > 1e-3), `${path}: B trained away from 0`);
        const sizes = [m.inFeatures, m.outFeatures, 4];
        assertClose(
          await m.base.weight.download(),
          mergedRef(before[k], a, b, m.scaling, sizes, m.base.layout),
          { what: `${path} merged` },
        );
      }
      lora.unmerge();
      for (const [k, [path, m]] of adapters.entries()) {
        assertClose(await m.base.weight.download(), before[k], { atol: 1e-6, what: `${path} after unmerge` });
      }
      throws(() => lora.unmerge(), /not merged/);
      model.dispose();
    },
  );
}

for (const { name, make, linears } of FAMILIES) {
  gpuTest(
    `LoRA memory (${name}): 4 gradient and 8 optimizer bytes per adapter parameter, none for the frozen base`,
    async (gpu) => {
      const model = make(gpu);
      const rank = 4;
      const method = new LoraMethod(model, { rank, alpha: 8, targets: "all-linear", seed: 1 });
      // A [r, in] and B [out, r] on every linear layer of every block.
      const adapter = model.config.nLayer * linears.reduce((s, [i, o]) => s + rank * (i + o), 0);
      const optimizer = new AdamW(gpu);
      const batcher = new StreamBatcher(Uint32Array.from({ length: 500 }, (_, i) => (i * 7) % 32), 2, 8, 5);
      // What other tests left live, so a leak there does not fail the exact counts here.
      const before = gpu.memory.stats().live;
      const result = await train({
        model,
        method,
        optimizer,
        nextBatch: () => batcher.next(),
        schedule: makeSchedule({ kind: "constant", lr: 1e-2 }),
        steps: 3,
        maxGradNorm: 1,
      });
      for (const r of result.steps) {
        equal(r.memory.grads - before.grads, 4 * adapter, `grads at step ${r.step}`);
        equal(r.memory.optimizer - before.optimizer, 8 * adapter, `optimizer at step ${r.step}`);
      }
      optimizer.dispose();
      model.dispose();
    },
  );
}

gpuTest("the PEFT export has PEFT's config, keys and shapes", async (gpu) => {
  const model = new GPT(gpu, CONFIG, { seed: 2 });
  const lora = new LoraMethod(model, { rank: 4, alpha: 8, dropout: 0.05, targets: "all-linear", seed: 1 });
  const dir = await cacheTempDir();
  await lora.exportPeft(dir, "gpt2-tiny");
  const cfg = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`));
  equal(cfg.peft_type, "LORA");
  equal(cfg.r, 4);
  equal(cfg.lora_alpha, 8);
  equal(cfg.lora_dropout, 0.05);
  equal(cfg.fan_in_fan_out, true);
  deepEqual(cfg.target_modules, ["c_attn", "c_proj", "c_fc"]);
  const st = new Safetensors(await Deno.readFile(`${dir}/adapter_model.safetensors`));
  equal(st.names().length, 2 * 4 * 2);
  deepEqual(st.entries.get("base_model.model.transformer.h.1.attn.c_attn.lora_A.weight")!.shape, [4, 16]);
  deepEqual(st.entries.get("base_model.model.transformer.h.1.attn.c_attn.lora_B.weight")!.shape, [48, 4]);
  deepEqual(st.entries.get("base_model.model.transformer.h.0.mlp.c_fc.lora_B.weight")!.shape, [64, 4]);
  deepEqual(st.entries.get("base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight")!.shape, [4, 64]);
  await Deno.remove(dir, { recursive: true });
  model.dispose();
});

gpuTest("LoRA refuses unknown targets and bad ranks", (gpu) => {
  const model = new GPT(gpu, CONFIG, { seed: 2 });
  throws(
    () => new LoraMethod(model, { rank: 4, alpha: 8, targets: ["q_proj"], seed: 1 }),
    /unknown target module\(s\) q_proj/,
  );
  throws(() => new LoraMethod(model, { rank: 0, alpha: 8, seed: 1 }), /rank 0 must be a positive integer/);
  model.dispose();
});

gpuTest(
  "LoRA on LLaMA: default targets q_proj and v_proj, all-linear the seven projections, GPT-2's names refused",
  (gpu) => {
    const model = new Llama(gpu, LLAMA, { seed: 2 });
    throws(
      () => new LoraMethod(model, { rank: 4, alpha: 8, targets: ["c_attn"], seed: 1 }),
      /unknown target module\(s\) c_attn; LLaMA has q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj/,
    );
    const byDefault = new LoraMethod(model, { rank: 4, alpha: 8, seed: 1 });
    deepEqual(byDefault.config.targets, ["q_proj", "v_proj"]);
    deepEqual(
      byDefault.adapters().map(([p]) => p),
      [0, 1].flatMap((i) => ["q_proj", "v_proj"].map((p) => `model.layers.${i}.self_attn.${p}`)),
    );
    model.dispose();
    const seven = [
      "self_attn.q_proj",
      "self_attn.k_proj",
      "self_attn.v_proj",
      "self_attn.o_proj",
      "mlp.gate_proj",
      "mlp.up_proj",
      "mlp.down_proj",
    ];
    const fresh = new Llama(gpu, LLAMA, { seed: 2 });
    const all = new LoraMethod(fresh, { rank: 4, alpha: 8, targets: "all-linear", seed: 1 });
    deepEqual(all.config.targets, seven.map((p) => p.split(".")[1]));
    deepEqual(
      all.adapters().map(([p]) => p),
      [0, 1].flatMap((i) => seven.map((p) => `model.layers.${i}.${p}`)),
    );
    for (const [k, [path, m]] of all.adapters().entries()) {
      const [inF, outF] = LLAMA_LINEARS[k % 7];
      deepEqual([m.A.shape, m.B.shape], [[4, inF], [outF, 4]], path);
    }
    fresh.dispose();
  },
);

gpuTest(
  "LoRA on LLaMA exports PEFT's keys, shapes and config (fan_in_fan_out false); a reloaded base imports them back",
  async (gpu) => {
    const root = await cacheTempDir();
    const model = new Llama(gpu, LLAMA, { seed: 2 });
    await saveModel(model, `${root}/base`);
    const lora = new LoraMethod(model, { rank: 4, alpha: 8, seed: 1 });
    const rand = rng(3);
    for (const [, m] of lora.adapters()) m.B.upload(randomArray(rand, m.B.size, -0.5, 0.5));
    const adapted = await lossOf(model);
    await lora.exportPeft(`${root}/adapter`, "llama-tiny");
    const cfg = JSON.parse(await Deno.readTextFile(`${root}/adapter/adapter_config.json`));
    equal(cfg.peft_type, "LORA");
    equal(cfg.base_model_name_or_path, "llama-tiny");
    equal(cfg.r, 4);
    equal(cfg.lora_alpha, 8);
    equal(cfg.fan_in_fan_out, false);
    deepEqual(cfg.target_modules, ["q_proj", "v_proj"]);
    const st = new Safetensors(await Deno.readFile(`${root}/adapter/adapter_model.safetensors`));
    const key = (i: number, p: string, m: string) =>
      `base_model.model.model.layers.${i}.self_attn.${p}.lora_${m}.weight`;
    deepEqual(
      st.names().sort(),
      [0, 1].flatMap((i) => ["q_proj", "v_proj"].flatMap((p) => ["A", "B"].map((m) => key(i, p, m)))).sort(),
    );
    // A [r, in], B [out, r]: v_proj's out is the 2 key/value heads' width.
    deepEqual(st.entries.get(key(1, "q_proj", "A"))!.shape, [4, 32]);
    deepEqual(st.entries.get(key(1, "q_proj", "B"))!.shape, [32, 4]);
    deepEqual(st.entries.get(key(0, "v_proj", "A"))!.shape, [4, 32]);
    deepEqual(st.entries.get(key(0, "v_proj", "B"))!.shape, [16, 4]);
    const saved = await Promise.all(lora.trainable().map(([, t]) => t.download()));
    for (const [k, [n]] of lora.trainable().entries()) {
      deepEqual(st.getF32(`base_model.model.${n}`), saved[k], `${n} in the file`);
    }
    const { model: reloaded } = await loadModel(gpu, `${root}/base`);
    const again = new LoraMethod(reloaded, { rank: 4, alpha: 8, seed: 9 });
    await again.importPeft(`${root}/adapter`);
    for (const [k, [n, t]] of again.trainable().entries()) deepEqual(await t.download(), saved[k], n);
    equal(await lossOf(reloaded), adapted);
    reloaded.dispose();
    model.dispose();
    await Deno.remove(root, { recursive: true });
  },
);

gpuTest(
  "PyTorch rebuilds our merged weights from the PEFT export: W + scaling·(B·A)ᵀ",
  async (gpu) => {
    const root = await cacheTempDir();
    const model = new GPT(gpu, CONFIG, { seed: 2 });
    await saveGPT2(model, `${root}/base`);
    const lora = new LoraMethod(model, { rank: 4, alpha: 16, targets: "all-linear", seed: 1 });
    await trainSteps(model, lora.trainable(), 2);
    await lora.exportPeft(`${root}/adapter`);
    lora.merge();
    await saveGPT2(model, `${root}/merged`);
    const r =
      (await runReference("peft_check.py", [`${root}/base`, `${root}/adapter`, `${root}/merged`])) as {
        adapters: number;
        max_abs_diff: number;
      };
    equal(r.adapters, 8);
    ok(r.max_abs_diff < 1e-6, `max |rebuilt − merged| = ${r.max_abs_diff}`);
    const { model: reloaded } = await loadGPT2(gpu, `${root}/merged`);
    ok(
      Math.abs((await lossOf(reloaded)) - (await lossOf(model))) < 1e-5,
      "the merged directory loads and scores the same",
    );
    reloaded.dispose();
    model.dispose();
    await Deno.remove(root, { recursive: true });
  },
  { ignore: !hasTorch },
);
