/** The finetune command's outputs and metrics.json format, for each method. */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { finetune, parseFinetuneArgs } from "../../experiments/finetune.ts";
import { writeBin } from "../../experiments/pretrain.ts";
import { CATEGORIES } from "../../core/memory.ts";
import { loadGPT2 } from "../../core/io/hf.ts";
import { cacheTempDir, gpuTest } from "../helpers.ts";

const tiny = new URL("../fixtures/gpt2_tiny/transformer", import.meta.url).pathname;

gpuTest("finetune writes each method's outputs and metrics.json in the documented format", async (gpu) => {
  const root = await cacheTempDir();
  await writeBin(`${root}/data.bin`, Uint32Array.from({ length: 600 }, (_, i) => (i * 13 + (i >> 2)) % 61));
  const common = {
    model: tiny,
    data: `${root}/data.bin`,
    steps: 4,
    blockSize: 8,
    batchSize: 2,
    lr: 1e-2,
    seed: 1,
    quiet: true,
    gpu,
  };
  for (const method of ["full", "lisa", "lora"] as const) {
    const out = `${root}/${method}`;
    const m = await finetune({
      ...common,
      method,
      out,
      gamma: 1,
      period: 2,
      rank: 2,
      merge: true,
      valFraction: 0.2,
    });
    const j = JSON.parse(await Deno.readTextFile(`${out}/metrics.json`));
    equal(j.method, method);
    equal(j.steps.length, 4);
    for (const s of j.steps) {
      deepEqual(Object.keys(s).slice(0, 5), ["step", "loss", "lr", "activeLayers", "memory"]);
      deepEqual(Object.keys(s.memory), [...CATEGORIES]);
      ok(Number.isFinite(s.loss));
    }
    deepEqual(Object.keys(j.peak).sort(), ["total", ...CATEGORIES].sort());
    equal(j.peak.total, m.peak.total);
    for (const c of CATEGORIES) {
      const steps = j.steps as { memory: Record<string, number> }[];
      equal(j.peak[c], Math.max(...steps.map((s) => s.memory[c])), `peak ${c} is the largest step's`);
    }
    const lines = (await Deno.readTextFile(`${out}/steps.jsonl`)).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    deepEqual(lines, j.steps, "steps.jsonl holds the same steps as metrics.json");
    ok(Number.isFinite(j.finalValLoss));
    if (method === "lisa") {
      equal(j.steps[0].activeLayers.length, 1);
      equal(j.config.gamma, 1);
      equal(j.config.state, "reset");
    } else deepEqual(j.steps[0].activeLayers, [0, 1]);
    const files = [...Deno.readDirSync(out)].map((e) => e.name).sort();
    if (method === "lora") {
      deepEqual(files, [
        "adapter_config.json",
        "adapter_model.safetensors",
        "merged",
        "metrics.json",
        "steps.jsonl",
      ]);
      const { keyStyle } = await loadGPT2(gpu, `${out}/merged`).then((r) => (r.model.dispose(), r));
      equal(keyStyle, "transformer", "merged weights keep the input's key style");
    } else {
      deepEqual(files, ["config.json", "metrics.json", "model.safetensors", "steps.jsonl"]);
      const { keyStyle } = await loadGPT2(gpu, out).then((r) => (r.model.dispose(), r));
      equal(keyStyle, "transformer");
    }
  }
  await Deno.remove(root, { recursive: true });
});

Deno.test("finetune flags: required ones, methods, policies and numbers are checked by name", () => {
  const base = ["--model", "m", "--data", "d.bin", "--steps", "3", "--block-size", "8", "--lr", "1e-3"];
  const o = parseFinetuneArgs([
    ...base,
    "--method",
    "lisa",
    "--gamma",
    "2",
    "--period",
    "5",
    "--state",
    "offload",
    "--probabilities",
    "1,2,1",
  ]);
  equal(o.gamma, 2);
  equal(o.state, "offload");
  deepEqual(o.probabilities, [1, 2, 1]);
  deepEqual(parseFinetuneArgs([...base, "--method", "lora", "--targets", "c_attn,mlp.c_proj"]).targets, [
    "c_attn",
    "mlp.c_proj",
  ]);
  equal(parseFinetuneArgs([...base, "--method", "lora", "--targets", "all-linear"]).targets, "all-linear");
  throws(() => parseFinetuneArgs(base), /--method is required/);
  throws(
    () => parseFinetuneArgs([...base, "--method", "adapter"]),
    /--method adapter: expected full, lora or lisa/,
  );
  throws(
    () => parseFinetuneArgs([...base, "--method", "lisa", "--state", "drop"]),
    /--state drop: expected reset, keep or offload/,
  );
  throws(
    () => parseFinetuneArgs([...base, "--method", "full", "--batch-size", "2.5"]),
    /--batch-size 2.5: expected a positive integer/,
  );
  throws(() => parseFinetuneArgs(["--method", "full"]), /--model is required/);
});
