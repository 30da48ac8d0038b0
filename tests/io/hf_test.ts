import { deepEqual, equal, rejects, throws } from "node:assert/strict";
import { CheckpointError, configFromHF, configToHF, loadGPT2, saveGPT2 } from "../../core/io/hf.ts";
import { encodeSafetensors, Safetensors } from "../../core/io/safetensors.ts";
import { GPT } from "../../core/nn/gpt.ts";
import { AdamW } from "../../core/optim/adamw.ts";
import { backward, noGrad } from "../../core/autograd.ts";
import { tidy } from "../../core/tensor.ts";
import { cacheTempDir, gpuTest, hasTorch, runReference } from "../helpers.ts";

const tiny = new URL("../fixtures/gpt2_tiny/bare/", import.meta.url).pathname;

Deno.test("config.json fields map to our config, and bad ones are named", () => {
  const base = { model_type: "gpt2", vocab_size: 61, n_positions: 16, n_embd: 16, n_layer: 2, n_head: 2 };
  deepEqual(configFromHF(base), {
    vocabSize: 61,
    blockSize: 16,
    nLayer: 2,
    nHead: 2,
    nEmbd: 16,
    layerNormEps: 1e-5,
  });
  deepEqual(configFromHF({ ...base, n_positions: undefined, n_ctx: 8 }).blockSize, 8);
  throws(() => configFromHF({ ...base, vocab_size: 0 }), /vocab_size is 0, expected a positive integer/);
  throws(() => configFromHF({ ...base, n_layer: undefined }), /n_layer is undefined/);
  throws(() => configFromHF({ ...base, model_type: "llama" }), /model_type "llama" is not gpt2/);
  throws(
    () => configFromHF({ ...base, activation_function: "relu" }),
    /activation_function "relu" is not gelu_new/,
  );
  throws(() => configFromHF({ ...base, n_head: 3 }), /n_embd 16 must split into 3 heads/);
  throws(() => configFromHF([]), CheckpointError);
  const back = configFromHF(configToHF(configFromHF(base)));
  deepEqual(back, configFromHF(base));
});

gpuTest("a saved model loads back identical, in either key style", async (gpu) => {
  const model = new GPT(gpu, { vocabSize: 37, blockSize: 8, nLayer: 1, nHead: 2, nEmbd: 8 }, { seed: 3 });
  for (const style of ["bare", "transformer"] as const) {
    const dir = await cacheTempDir();
    await saveGPT2(model, dir, style);
    const st = new Safetensors(await Deno.readFile(`${dir}/model.safetensors`));
    equal(
      st.names().includes(style === "bare" ? "h.0.attn.c_attn.weight" : "transformer.h.0.attn.c_attn.weight"),
      true,
    );
    deepEqual(
      st.entries.get(style === "bare" ? "h.0.mlp.c_fc.weight" : "transformer.h.0.mlp.c_fc.weight")!.shape,
      [8, 32],
    );
    const { model: back, keyStyle } = await loadGPT2(gpu, dir);
    equal(keyStyle, style);
    const a = model.namedParameters(), b = back.namedParameters();
    for (let i = 0; i < a.length; i++) deepEqual(await b[i][1].download(), await a[i][1].download(), a[i][0]);
    back.dispose();
    await Deno.remove(dir, { recursive: true });
  }
  model.dispose();
});

gpuTest("broken checkpoints are rejected naming the file and the tensor", async (gpu) => {
  const dir = await cacheTempDir();
  const config = JSON.parse(await Deno.readTextFile(`${tiny}config.json`));
  const good = new Safetensors(await Deno.readFile(`${tiny}model.safetensors`));
  const tensors = (drop: string[], extra: Record<string, { shape: number[]; data: Float32Array }> = {}) => {
    const out: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const n of good.names()) {
      if (!drop.includes(n)) out[n] = { shape: good.entries.get(n)!.shape, data: good.getF32(n) };
    }
    return { ...out, ...extra };
  };
  const write = async (t: Record<string, { shape: number[]; data: Float32Array }>, cfg: unknown = config) => {
    await Deno.writeTextFile(`${dir}/config.json`, typeof cfg === "string" ? cfg : JSON.stringify(cfg));
    await Deno.writeFile(`${dir}/model.safetensors`, encodeSafetensors(t));
  };
  await write(tensors(["h.1.mlp.c_fc.bias"]));
  await rejects(loadGPT2(gpu, dir), /model.safetensors: missing tensor h.1.mlp.c_fc.bias/);
  await write(tensors(["wpe.weight"], { "wpe.weight": { shape: [4, 16], data: new Float32Array(64) } }));
  await rejects(loadGPT2(gpu, dir), /wpe.weight has shape \[4,16\], expected \[16,16\] for this config/);
  await write(tensors([], { "h.0.attn.rotary": { shape: [1], data: new Float32Array(1) } }));
  await rejects(loadGPT2(gpu, dir), /unexpected tensors h.0.attn.rotary/);
  await write(tensors([], { "lm_head.weight": { shape: [61, 16], data: new Float32Array(61 * 16) } }));
  await rejects(loadGPT2(gpu, dir), /lm_head.weight differs from wte.weight; only tied heads are supported/);
  await write(tensors([]), "{ not json");
  await rejects(loadGPT2(gpu, dir), /config.json: not valid JSON/);
  await write(tensors([]));
  await Deno.remove(`${dir}/model.safetensors`);
  await rejects(
    loadGPT2(gpu, dir),
    /neither model.safetensors.index.json nor model.safetensors \(only safetensors checkpoints are read/,
  );
  await rejects(loadGPT2(gpu, `${dir}/nowhere`), /config.json: cannot read/);
  await Deno.remove(dir, { recursive: true });
});

gpuTest(
  "a model we train and save is read by PyTorch in Hugging Face's layout and gives our loss (both key styles)",
  async (gpu) => {
    const expected = JSON.parse(
      await Deno.readTextFile(new URL("../fixtures/gpt2_tiny/expected.json", import.meta.url)),
    );
    const input = {
      ids: Uint32Array.from(expected.batch.ids as number[]),
      targets: Uint32Array.from(expected.batch.targets as number[]),
      batchSize: expected.batch.batchSize,
      blockSize: expected.batch.blockSize,
    };
    const { model } = await loadGPT2(gpu, tiny);
    const opt = new AdamW(gpu);
    backward(tidy(() => model.loss(input)));
    opt.step(model.namedParameters(), 0.05);
    for (const [, p] of model.namedParameters()) p.zeroGrad();
    const loss = noGrad(() => tidy(() => model.loss(input)));
    const ours = (await loss.download())[0];
    loss.dispose();
    for (const style of ["bare", "transformer"] as const) {
      const dir = await cacheTempDir();
      await saveGPT2(model, dir, style);
      const { loss: theirs } = (await runReference("gpt2.py", ["--check", dir])) as { loss: number };
      equal(Math.abs(theirs - ours) < 1e-4 * ours, true, `PyTorch ${theirs} vs ours ${ours} (${style})`);
      equal(Math.abs(theirs - expected.loss) > 1e-3, true, "the saved weights are the trained ones");
      await Deno.remove(dir, { recursive: true });
    }
    opt.dispose();
    model.dispose();
  },
  { ignore: !hasTorch },
);
