/** `deno task memory` on the LLaMA-family models: the estimator's predictions beside the paper's figures. */
import { equal, ok } from "node:assert/strict";
import { ARCHITECTURES, estimate } from "../../experiments/estimator.ts";
import { PAPER_FIGURES } from "../../experiments/memory.ts";
import { runTask } from "../helpers.ts";

for (const model of ["tinyllama", "llama2-7b", "llama2-70b", "mistral-7b"]) {
  Deno.test(`deno task memory --model ${model} prints the estimate by category and the paper's figures`, async () => {
    const r = await runTask("memory", "experiments/memory.ts", ["--model", model, "--method", "lisa"]);
    equal(r.code, 0, r.stderr);
    const lines = r.stdout.split("\n");
    equal(lines[0], `${model}, lisa, batch 1 × 1024 tokens, weights 4 B/param, gpu kernels:`);
    const e = estimate(ARCHITECTURES[model], { method: "lisa", batch: 1, seq: 1024, gamma: 2, rank: 8 });
    for (const c of ["weights", "grads", "optimizer", "activations", "workspace", "total"] as const) {
      const line = lines.find((l) => l.trim().startsWith(`${c} `));
      equal(line?.trim().split(/\s+/)[1], (e[c] / 1e9).toFixed(2), `${c}: ${line}`);
    }
    ok(r.stdout.includes("LLaMA rules: what our ops save and allocate, tested against measured runs"));
    for (const f of PAPER_FIGURES) {
      ok(
        lines.some((l) => l.startsWith(`| ${f.model} | ${f.label} | ${f.atLeast ? "≥ " : ""}${f.gb} GB |`)),
        `the paper's ${f.model} ${f.label} row:\n${r.stdout}`,
      );
    }
  });
}

Deno.test("deno task memory --model DIR estimates the model a folder's config.json describes, either family", async () => {
  const folders = [
    ["gpt2_tiny/bare", { family: "gpt2", vocab: 61, d: 16, layers: 2, heads: 2, ffn: 64, positions: 16 }],
    ["llama_tiny/gqa", {
      family: "llama",
      vocab: 61,
      d: 32,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 72,
      positions: 0,
      tiedHead: false,
    }],
  ] as const;
  for (const [folder, arch] of folders) {
    const dir = new URL(`../fixtures/${folder}`, import.meta.url).pathname;
    const r = await runTask("memory", "experiments/memory.ts", [
      "--model",
      dir,
      "--method",
      "full",
      "--seq",
      "16",
    ]);
    equal(r.code, 0, r.stderr);
    const e = estimate(arch, { method: "full", batch: 1, seq: 16 });
    const line = r.stdout.split("\n").find((l) => l.trim().startsWith("weights "));
    equal(line?.trim().split(/\s+/)[1], (e.weights / 1e6).toFixed(2), `${folder}: ${line}`);
    const long = await runTask("memory", "experiments/memory.ts", ["--model", dir, "--seq", "1024"]);
    ok(long.code !== 0 && /--seq 1024 exceeds .*'s longest sequence (16|32)/.test(long.stderr), long.stderr);
  }
});
