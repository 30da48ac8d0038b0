/**
 * `deno task memory-compare [--model DIR] [--data FILE] [--steps N] [--period K]`: fine-tunes the
 * same model on the same batches with full, LoRA (r = 8, all linear layers) and LISA (E+H+2L, each
 * state policy), and prints peak memory by category (our exact accounting) as a Markdown table, plus
 * one JSON line per method with the exact bytes.
 */
import { requestGpu } from "../core/gpu.ts";
import { finetune, type FinetuneOptions } from "./finetune.ts";
import { flagNumber, parseFlags, runCli } from "./flags.ts";
import { memoryHeader, memoryRow } from "./report.ts";

const USAGE =
  "deno task memory-compare [--model DIR] [--data FILE] [--steps N] [--period K] [--block-size T] [--batch-size B]";

async function main(): Promise<void> {
  const values = parseFlags(Deno.args, {
    model: { type: "string", default: ".cache/pretrain-small" },
    data: { type: "string" },
    steps: { type: "string", default: "12" },
    period: { type: "string", default: "3" },
    "block-size": { type: "string", default: "64" },
    "batch-size": { type: "string", default: "8" },
  });
  const period = flagNumber("period", values.period, "positive integer");
  const gpu = await requestGpu();
  const base: FinetuneOptions = {
    model: values.model,
    data: values.data ?? `${values.model}/val.bin`,
    method: "full",
    steps: flagNumber("steps", values.steps, "positive integer"),
    blockSize: flagNumber("block-size", values["block-size"], "positive integer"),
    batchSize: flagNumber("batch-size", values["batch-size"], "positive integer"),
    lr: 1e-3,
    seed: 0,
    quiet: true,
    gpu,
  };
  const runs: [string, Partial<FinetuneOptions>][] = [
    ["full", { method: "full" }],
    ["lora r=8 (all linear)", { method: "lora", rank: 8, alpha: 16, targets: "all-linear" }],
    ["lisa E+H+2L reset", { method: "lisa", gamma: 2, period, state: "reset" }],
    ["lisa E+H+2L keep", { method: "lisa", gamma: 2, period, state: "keep" }],
    ["lisa E+H+2L offload", { method: "lisa", gamma: 2, period, state: "offload" }],
  ];
  console.log(
    `adapter ${gpu.info.description}; model ${base.model}; ${base.steps} steps of ${base.batchSize}×${base.blockSize}` +
      ` tokens; peak live MiB by category over the run\n`,
  );
  for (const line of memoryHeader()) console.log(line);
  const rows: string[] = [];
  for (const [label, o] of runs) {
    const m = await finetune({ ...base, ...o });
    console.log(memoryRow(label, { peakBytes: m.peak.total, peak: m.peak }));
    rows.push(JSON.stringify({ method: label, peak: m.peak, msPerStep: Math.round(m.msPerStep) }));
  }
  console.log("");
  for (const r of rows) console.log(r);
}

if (import.meta.main) await runCli("memory-compare", USAGE, main);
