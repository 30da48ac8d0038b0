/**
 * LoRA as PEFT defines it: init equals the base, merge equals unmerged, PEFT's files; dropout only in
 * training mode, so evaluation and greedy decoding neither see masks nor move the generator.
 */
import { deepEqual, equal, notDeepEqual, ok, throws } from "node:assert/strict";
import { backward, noGrad } from "../../core/autograd.ts";
import type { Batch } from "../../core/data/batches.ts";
import { evaluate } from "../../core/evaluate.ts";
import { LoraMethod } from "../../core/finetune/lora.ts";
import { greedyComplete } from "../../core/generate.ts";
import type { Gpu } from "../../core/gpu.ts";
import { loadGPT2, saveGPT2 } from "../../core/io/hf.ts";
import { Safetensors } from "../../core/io/safetensors.ts";
import { GPT } from "../../core/nn/gpt.ts";
import { Linear } from "../../core/nn/layers.ts";
import { LoRALinear } from "../../core/nn/lora.ts";
import { AdamW } from "../../core/optim/adamw.ts";
import { Rng } from "../../core/random.ts";
import { type Tensor, tidy } from "../../core/tensor.ts";
import { assertClose, cacheTempDir, gpuTest, hasTorch, runReference } from "../helpers.ts";

const CONFIG = { vocabSize: 32, blockSize: 16, nLayer: 2, nHead: 2, nEmbd: 16 };
const ids = Uint32Array.from({ length: 2 * 12 }, (_, i) => (i * 5 + 3) % 32);
const input = { ids, targets: ids.map((x) => (x + 7) % 32), batchSize: 2, blockSize: 12 };

async function lossOf(model: GPT): Promise<number> {
  const l = noGrad(() => tidy(() => model.loss(input)));
  const v = (await l.download())[0];
  l.dispose();
  return v;
}

async function trainSteps(
  model: GPT,
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

gpuTest("LoRA at init (B = 0) gives exactly the base model's loss", async (gpu) => {
  const model = new GPT(gpu, CONFIG, { seed: 2 });
  const base = await lossOf(model);
  new LoraMethod(model, { rank: 4, alpha: 8, targets: "all-linear", seed: 1 });
  equal(await lossOf(model), base);
  model.dispose();
});

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

gpuTest("LoRA trains only A and B: base weights, biases and embeddings get no gradient", (gpu) => {
  const model = new GPT(gpu, CONFIG, { seed: 2 });
  const lora = new LoraMethod(model, { rank: 4, alpha: 8, seed: 1 });
  const loss = tidy(() => model.loss(input));
  backward(loss);
  for (const [name, p] of model.namedParameters()) {
    equal(!!p.grad, name.includes(".lora_"), `${name} has a gradient: ${!!p.grad}`);
  }
  deepEqual(lora.trainable().map(([n]) => n), [
    "h.0.attn.c_attn.lora_A.weight",
    "h.0.attn.c_attn.lora_B.weight",
    "h.1.attn.c_attn.lora_A.weight",
    "h.1.attn.c_attn.lora_B.weight",
  ]);
  model.dispose();
});

gpuTest(
  "after training, the merged model's loss equals the unmerged one's; unmerge restores the base",
  async (gpu) => {
    const model = new GPT(gpu, CONFIG, { seed: 2 });
    const before = await model.h[0].attn.c_attn.namedParameters()[0][1].download();
    const lora = new LoraMethod(model, { rank: 4, alpha: 16, targets: ["c_attn", "mlp.c_proj"], seed: 1 });
    await trainSteps(model, lora.trainable(), 3);
    const unmerged = await lossOf(model);
    lora.merge();
    const merged = await lossOf(model);
    ok(Math.abs(merged - unmerged) < 1e-5 * unmerged, `merged ${merged} vs unmerged ${unmerged}`);
    lora.unmerge();
    assertClose(await model.h[0].attn.c_attn.namedParameters()[0][1].download(), before, {
      atol: 1e-6,
      what: "W after unmerge",
    });
    throws(() => lora.unmerge(), /not merged/);
    model.dispose();
  },
);

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
