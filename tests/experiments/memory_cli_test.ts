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
