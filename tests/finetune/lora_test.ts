/** LoRA as PEFT defines it: init equals the base, merge equals unmerged, PEFT's files. */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { backward, noGrad } from "../../core/autograd.ts";
import { LoraMethod } from "../../core/finetune/lora.ts";
import { loadGPT2, saveGPT2 } from "../../core/io/hf.ts";
import { Safetensors } from "../../core/io/safetensors.ts";
import { GPT } from "../../core/nn/gpt.ts";
import { AdamW } from "../../core/optim/adamw.ts";
import { tidy } from "../../core/tensor.ts";
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

async function trainSteps(model: GPT, lora: LoraMethod, steps: number): Promise<void> {
  const opt = new AdamW(model.gpu);
  for (let i = 0; i < steps; i++) {
    backward(tidy(() => model.loss(input)));
    opt.step(lora.trainable(), 0.05);
    for (const [, p] of lora.trainable()) p.zeroGrad();
  }
  await model.gpu.submit();
  opt.dispose();
}

gpuTest("LoRA at init (B = 0) gives exactly the base model's loss, with and without dropout", async (gpu) => {
  for (const dropout of [0, 0.1]) {
    const model = new GPT(gpu, CONFIG, { seed: 2 });
    const base = await lossOf(model);
    new LoraMethod(model, { rank: 4, alpha: 8, dropout, targets: "all-linear", seed: 1 });
    equal(await lossOf(model), base);
    model.dispose();
  }
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
    await trainSteps(model, lora, 3);
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
    await trainSteps(model, lora, 2);
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
