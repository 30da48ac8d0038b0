/**
 * Every CLI on a LLaMA folder, as on GPT-2: pretrain --preset llama-small and eval in their own
 * processes; eval and finetune (full, LISA, LoRA with --merge) on a sharded LLaMA folder with a
 * tokenizer.json, outside the project; the experiment on a LLaMA preset.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { evalWindows } from "../../core/data/batches.ts";
import { tokenizerFromJson } from "../../core/data/hf_tokenizer.ts";
import { evaluate } from "../../core/evaluate.ts";
import { LoraMethod } from "../../core/finetune/lora.ts";
import { saveLlama } from "../../core/io/llama.ts";
import { loadModel } from "../../core/io/models.ts";
import { readSafetensorsFile } from "../../core/io/safetensors.ts";
import { INDEX_FILE } from "../../core/io/shards.ts";
import { Llama } from "../../core/nn/llama.ts";
import type { LlamaConfig } from "../../core/nn/llama_config.ts";
import { tidy } from "../../core/tensor.ts";
import { evalCommand } from "../../experiments/eval.ts";
import { finetune } from "../../experiments/finetune.ts";
import { experiment } from "../../experiments/main.ts";
import { PRESETS } from "../../experiments/presets.ts";
import { llamaJson } from "../data/tokenizer_files.ts";
import { gpuTest, runTask, testGpu } from "../helpers.ts";

Deno.test({
  name:
    "pretrain --preset llama-small writes a LLaMA folder; eval in a new process reproduces its validation loss",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "lisa-llama-pretrain-" });
    try {
      const out = `${root}/base`;
      const p = await runTask("pretrain", "experiments/pretrain.ts", [
        "--preset",
        "llama-small",
        "--steps",
        "4",
        "--quiet",
        "--out",
        out,
      ]);
      equal(p.code, 0, p.stderr);
      const pre = JSON.parse(p.stdout.split("\n").at(-1)!);
      const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
      equal(config.model_type, "llama");
      equal(config.num_key_value_heads, 2);
      equal(config.tie_word_embeddings, false);
      const st = await readSafetensorsFile(`${out}/model.safetensors`);
      ok(st.entries.has("lm_head.weight") && st.entries.has("model.layers.7.mlp.gate_proj.weight"));
      const e = await runTask("eval", "experiments/eval.ts", [
        "--model",
        out,
        "--data",
        `${out}/val.bin`,
        "--block-size",
        "64",
        "--quiet",
      ]);
      equal(e.code, 0, e.stderr);
      const ev = JSON.parse(e.stdout.split("\n").at(-1)!);
      ok(Math.abs(ev.loss - pre.valLoss) <= 1e-6 * pre.valLoss, `eval ${ev.loss} vs pretrain ${pre.valLoss}`);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

const CONFIG: LlamaConfig = {
  vocabSize: 288, // the tokenizer's 279 ids, padded as checkpoints pad theirs
  blockSize: 64,
  nLayer: 2,
  nHead: 4,
  nKvHead: 2,
  nEmbd: 32,
  nInner: 72,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  tiedHead: false,
};
const TEXT = "Hello world, the theory of the heat. Hello there, world! ".repeat(60);

gpuTest(
  "eval and finetune read a sharded LLaMA folder with a tokenizer.json; outputs keep its layout; LoRA's merge equals the adapter",
  async (gpu) => {
    const root = await Deno.makeTempDir({ prefix: "lisa-llama-cli-" });
    try {
      const base = `${root}/base model`; // a space in the path, as users' folders have
      const model = new Llama(gpu, CONFIG, { seed: 5 });
      await saveLlama(model, base, { maxShardBytes: 48 * 1024 });
      const config = JSON.parse(await Deno.readTextFile(`${base}/config.json`));
      await Deno.writeTextFile(`${base}/config.json`, JSON.stringify({ ...config, custom_field: 7 }));
      await Deno.writeTextFile(`${base}/tokenizer.json`, JSON.stringify(llamaJson()));
      const shards = [...Deno.readDirSync(base)].filter((f) => f.name.startsWith("model-")).length;
      ok(shards >= 2, `${shards} shards`);
      await Deno.writeTextFile(`${root}/data.txt`, TEXT);

      // eval encodes the text with the folder's tokenizer.json.
      const ids = Uint32Array.from(tokenizerFromJson(JSON.stringify(llamaJson())).encode(TEXT));
      const want = await evaluate(model, evalWindows(ids, 16, 2));
      const got = await evalCommand({
        model: base,
        data: `${root}/data.txt`,
        blockSize: 16,
        batchSize: 2,
        quiet: true,
      });
      equal(got.tokens, want.tokens);
      ok(Math.abs(got.loss - want.loss) <= 1e-6 * want.loss, `eval ${got.loss} vs ${want.loss}`);

      const common = {
        model: base,
        data: `${root}/data.txt`,
        steps: 3,
        blockSize: 16,
        batchSize: 2,
        lr: 1e-2,
        seed: 1,
        quiet: true,
        gpu,
      };
      for (const method of ["full", "lisa"] as const) {
        const out = `${root}/${method}`;
        const m = await finetune({ ...common, method, out, gamma: 1, period: 2 });
        equal(m.steps[0].activeLayers.length, method === "lisa" ? 1 : 2);
        const files = [...Deno.readDirSync(out)].map((e) => e.name);
        ok(files.includes(INDEX_FILE) && files.includes("tokenizer.json"), files.join());
        equal(files.filter((f) => f.startsWith("model-")).length, shards, "as many shards as the input");
        equal(JSON.parse(await Deno.readTextFile(`${out}/config.json`)).custom_field, 7);
        const { model: tuned, source } = await loadModel(gpu, out);
        equal(source.modelType, "llama");
        const before = await model.namedParameters()[0][1].download();
        const after = await tuned.namedParameters()[0][1].download();
        ok(after.some((x, i) => x !== before[i]), "the embedding trained");
        tuned.dispose();
      }

      const out = `${root}/lora`;
      await finetune({ ...common, method: "lora", out, rank: 2, merge: true });
      const cfg = JSON.parse(await Deno.readTextFile(`${out}/adapter_config.json`));
      equal(cfg.fan_in_fan_out, false);
      deepEqual(cfg.target_modules, ["q_proj", "v_proj"]);
      const keys = (await readSafetensorsFile(`${out}/adapter_model.safetensors`)).names().sort();
      equal(keys.length, 2 * 2 * 2);
      ok(keys.includes("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"), keys.join());
      ok(
        keys.every((k) =>
          /^base_model\.model\.model\.layers\.\d\.self_attn\.[qv]_proj\.lora_[AB]\.weight$/.test(k)
        ),
      );
      // The merged folder is a LLaMA whose loss is the adapter's on the base.
      const { model: merged } = await loadModel(gpu, `${out}/merged`);
      const { model: adapted } = await loadModel(gpu, base);
      const lora = new LoraMethod(adapted, { rank: 2, alpha: 4, seed: 0 });
      await lora.importPeft(out);
      const batch = evalWindows(ids, 16, 2)[0];
      const a = await tidy(() => merged.loss(batch)).download();
      const b = await tidy(() => adapted.loss(batch)).download();
      const c = await tidy(() => model.loss(batch)).download();
      ok(Math.abs(a[0] - b[0]) <= 1e-5 * b[0], `merged ${a[0]} vs adapter ${b[0]}`);
      ok(Math.abs(b[0] - c[0]) > 1e-4, "the adapter changed the loss");
      for (const m of [merged, adapted, model]) m.dispose();
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

Deno.test({
  name:
    "the experiment runs end to end on a LLaMA preset: LLaMA's layers in the skew, LISA's optimizer state below full's",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "lisa-llama-experiment-" });
    try {
      const preset = {
        ...PRESETS.tiny,
        name: "llama-tiny",
        model: { ...PRESETS["llama-small"].model, nLayer: 2, nHead: 2, nKvHead: 1, nEmbd: 64, nInner: 176 },
      };
      await experiment({ preset, out, fresh: true, quiet: true, gpu: await testGpu(), command: "test" });
      const r = JSON.parse(await Deno.readTextFile(`${out}/results.json`));
      equal(r.config.model.family, "llama");
      deepEqual(r.weightNormSkew.full.map((e: { layer: string }) => e.layer), [
        "embedding",
        "layers.0",
        "layers.1",
        "head",
      ]);
      equal(r.weightNormSkew.lora[0].updateNorm, 0, "LoRA's embedding does not train");
      ok(r.weightNormSkew.full[3].updateNorm > 0, "full trains the head (norm and lm_head)");
      const opt = (k: string) => r.methods[k].memory.peak.optimizer;
      ok(opt("lisa_1l") < opt("full") && opt("lora") < opt("lisa_1l"), "optimizer state: LoRA < LISA < full");
      for (const m of Object.values(r.methods) as { trainLoss: number[] }[]) {
        ok(m.trainLoss.every(Number.isFinite));
      }
      ok((await Deno.readTextFile(`${out}/report.md`)).includes("Base model: LLaMA"));
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
