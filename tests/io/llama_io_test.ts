/**
 * LLaMA folders: loadModel's dispatch on model_type, what the loader refuses (each error naming the
 * tensor or key), and saves that come back as they went (single file or shards, F32 or BF16, the
 * source's config.json kept), in folders outside the project.
 */
import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { CheckpointError, readCheckpointTensors } from "../../core/io/hf.ts";
import { llamaLayout, loadLlama, saveLlama } from "../../core/io/llama.ts";
import { loadModel, saveModel } from "../../core/io/models.ts";
import { encodeSafetensors, type F32Tensor } from "../../core/io/safetensors.ts";
import { INDEX_FILE, SINGLE_FILE } from "../../core/io/shards.ts";
import { GPT } from "../../core/nn/gpt.ts";
import { Llama } from "../../core/nn/llama.ts";
import { type LlamaConfig, llamaConfigToHF } from "../../core/nn/llama_config.ts";
import { gpuTest } from "../helpers.ts";

const CONFIG: LlamaConfig = {
  vocabSize: 61,
  blockSize: 32,
  nLayer: 2,
  nHead: 4,
  nKvHead: 2,
  nEmbd: 32,
  nInner: 72,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  tiedHead: false,
};

/** Tensors of `c`'s layout with seeded values, by name. */
function tensors(c: LlamaConfig): Record<string, F32Tensor> {
  const out: Record<string, F32Tensor> = {};
  let k = 0;
  for (const [name, shape] of llamaLayout(c)) {
    const n = shape.reduce((a, b) => a * b, 1);
    out[name] = { shape, data: Float32Array.from({ length: n }, () => Math.sin(++k) * 0.1) };
  }
  return out;
}

async function writeDir(
  dir: string,
  t: Record<string, F32Tensor>,
  config: Record<string, unknown> = llamaConfigToHF(CONFIG),
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
  await Deno.writeFile(`${dir}/model.safetensors`, encodeSafetensors(t));
}

gpuTest("loadModel dispatches on model_type; a LLaMA folder's values load as written", async (gpu) => {
  const dir = await Deno.makeTempDir({ prefix: "llama-io-" }); // outside the project
  try {
    const t = tensors(CONFIG);
    // Older checkpoints carry rotary inv_freq buffers: ignored.
    const withBuffers = {
      ...t,
      "model.layers.0.self_attn.rotary_emb.inv_freq": { shape: [4], data: new Float32Array(4) },
    };
    await writeDir(dir, withBuffers);
    const { model, source } = await loadModel(gpu, dir);
    ok(model instanceof Llama);
    equal(source.modelType, "llama");
    equal(source.sharded, false);
    for (const [name, p] of model.namedParameters()) deepEqual(await p.download(), t[name].data, name);
    model.dispose();
    // Mistral: same weights, the sliding window caps the longest sequence.
    await writeDir(dir, t, { ...llamaConfigToHF(CONFIG), model_type: "mistral", sliding_window: 16 });
    const mistral = await loadModel(gpu, dir);
    equal(mistral.source.modelType, "mistral");
    equal(mistral.model.config.blockSize, 16);
    const long = { ids: new Uint32Array(17), targets: new Uint32Array(17), batchSize: 1, blockSize: 17 };
    throws(
      () => mistral.model.loss(long),
      /17 tokens exceeds Mistral's sliding_window 16; sliding-window attention is not implemented/,
    );
    mistral.model.dispose();
    await writeDir(dir, t, { ...llamaConfigToHF(CONFIG), model_type: "falcon" });
    await rejects(
      loadModel(gpu, dir),
      /model_type "falcon" is not supported; supported: gpt2, llama, mistral/,
    );
    const gpt2 = new URL("../fixtures/gpt2_tiny/bare", import.meta.url).pathname;
    const g = await loadModel(gpu, gpt2);
    ok(g.model instanceof GPT);
    equal(g.source.modelType, "gpt2");
    g.model.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

gpuTest("the LLaMA loader refuses what the config does not describe, naming the tensor", async (gpu) => {
  const dir = await Deno.makeTempDir({ prefix: "llama-bad-" });
  try {
    const t = tensors(CONFIG);
    const without = (name: string) => Object.fromEntries(Object.entries(t).filter(([n]) => n !== name));
    const expect = async (files: Record<string, F32Tensor>, re: RegExp, config?: Record<string, unknown>) => {
      await writeDir(dir, files, config);
      await rejects(loadLlama(gpu, dir), (e: Error) => e instanceof CheckpointError && re.test(e.message));
    };
    await expect(
      without("lm_head.weight"),
      /missing tensor lm_head.weight \(config.json says tie_word_embeddings false\)/,
    );
    await expect(
      without("model.layers.1.input_layernorm.weight"),
      /missing tensor model.layers.1.input_layernorm.weight \(config.json has num_hidden_layers 2\)/,
    );
    await expect(
      { ...t, "model.layers.0.self_attn.k_proj.weight": { shape: [32, 32], data: new Float32Array(1024) } },
      /model.layers.0.self_attn.k_proj.weight has shape \[32,32\], expected \[16,32\]/,
    );
    await expect({
      ...t,
      "model.layers.0.self_attn.q_proj.bias": { shape: [32], data: new Float32Array(32) },
    }, /unexpected tensors model.layers.0.self_attn.q_proj.bias/);
    const bad = new Float32Array(t["model.norm.weight"].data);
    bad[5] = NaN;
    await expect(
      { ...t, "model.norm.weight": { shape: [32], data: bad } },
      /model.norm.weight holds NaN at element 5/,
    );
    // Tied: a head in the file must be the embedding.
    const tiedConfig = llamaConfigToHF({ ...CONFIG, tiedHead: true });
    await expect(t, /lm_head.weight differs from model.embed_tokens.weight/, tiedConfig);
    await writeDir(dir, { ...t, "lm_head.weight": t["model.embed_tokens.weight"] }, tiedConfig);
    const tied = await loadLlama(gpu, dir);
    equal(tied.model.lm_head, null);
    tied.model.dispose();
    await expect(t, /num_key_value_heads 3/, { ...llamaConfigToHF(CONFIG), num_key_value_heads: 3 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

gpuTest("LLaMA saves come back as they went: shards kept, BF16 rounded, config.json kept", async (gpu) => {
  const root = await Deno.makeTempDir({ prefix: "llama-save-" });
  try {
    const src = `${root}/src`;
    const model = new Llama(gpu, CONFIG, { seed: 3 });
    // Shards of at most 24 KiB: the embedding and the head each get one, the layers several.
    await saveLlama(model, src, { maxShardBytes: 24 * 1024 });
    const files = [...Deno.readDirSync(src)].map((e) => e.name).sort();
    ok(files.includes(INDEX_FILE), files.join());
    const shards = files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length;
    ok(shards >= 3, `${shards} shards`);
    // A key of the source's config.json that we do not model is kept.
    const cfg = JSON.parse(await Deno.readTextFile(`${src}/config.json`));
    await Deno.writeTextFile(
      `${src}/config.json`,
      JSON.stringify({ ...cfg, bos_token_id: 1, custom_field: "kept" }),
    );
    await Deno.writeTextFile(`${src}/tokenizer.json`, "{}");
    const loaded = await loadModel(gpu, src);
    ok(loaded.source.modelType === "llama" && loaded.source.sharded);
    const want = new Map(
      await Promise.all(model.namedParameters().map(async ([n, p]) => [n, await p.download()] as const)),
    );
    for (const [n, p] of loaded.model.namedParameters()) deepEqual(await p.download(), want.get(n), n);
    // Saved again over the same folder: same shard count, config kept, tokenizer untouched.
    await saveModel(loaded.model, src, { source: loaded.source });
    const again = [...Deno.readDirSync(src)].map((e) => e.name);
    equal(again.filter((f) => f.endsWith(".safetensors")).length, shards);
    const cfg2 = JSON.parse(await Deno.readTextFile(`${src}/config.json`));
    equal(cfg2.custom_field, "kept");
    equal(cfg2.torch_dtype, "float32");
    equal(await Deno.readTextFile(`${src}/tokenizer.json`), "{}");
    // BF16: values rounded to bfloat16 (8 mantissa bits), one file when it fits.
    const bf = `${root}/bf16`;
    await saveModel(loaded.model, bf, { dtype: "BF16" });
    const { tensors: st, sharded } = await readCheckpointTensors(bf);
    equal(sharded, false);
    ok(Deno.statSync(`${bf}/${SINGLE_FILE}`).isFile);
    equal(st.entries.get("model.norm.weight")!.dtype, "BF16");
    const w = want.get("model.layers.0.mlp.up_proj.weight")!;
    const r = st.getF32("model.layers.0.mlp.up_proj.weight");
    ok(r.some((x, i) => x !== w[i]), "BF16 rounds");
    ok(r.every((x, i) => Math.abs(x - w[i]) <= Math.abs(w[i]) * 2 ** -8), "within half a BF16 ulp");
    equal(JSON.parse(await Deno.readTextFile(`${bf}/config.json`)).torch_dtype, "bfloat16");
    model.dispose();
    loaded.model.dispose();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
