/** The experiment's outputs: results.json (documented format), report.md, and the SVG plots. */
import { getHost } from "../core/host.ts";
import { writeFileAtomic } from "../core/io/safetensors.ts";
import { CATEGORIES, type CategoryBytes } from "../core/memory.ts";
import {
  type Claim,
  CLAIM_RULE,
  isBlockGroup,
  type MethodStats,
  type SkewEntry,
  type Stat,
  type SweepPoint,
  wilson,
} from "./analyses.ts";
import type { HeldOutScore, MethodSpec, RunResult } from "./runner.ts";
import { groupedBars, lineChart, stackedBars } from "./svg.ts";

/** Everything a report is made from. */
export interface ExperimentRecord {
  command: string;
  configHash: string;
  config: Record<string, unknown>;
  env: {
    adapter: string;
    backend: string;
    /** Kernel family run (gpu or software). */
    kernels: string;
    deno: string;
    os: string;
    commit: string;
    dirty: boolean;
  };
  base: { dir: string; reused: boolean; valLoss: number; steps: number; seconds: number };
  /** The base model on each task's test split before fine-tuning. */
  before: { definitions: HeldOutScore; arithmetic: HeldOutScore };
  /** Always giving the most frequent training answer: its test accuracy is the floor a method must beat. */
  majority: { answer: string; accuracy: number };
  specs: MethodSpec[];
  /** Main runs by method key, per task: the first seed's (plots, memory, skew). */
  runs: Record<string, { definitions: RunResult; arithmetic: RunResult }>;
  /** Main runs by method key, per task, one per seed (first seed first). */
  seedRuns: Record<string, { definitions: RunResult[]; arithmetic: RunResult[] }>;
  /** Statistics over seeds of `seedRuns`. */
  stats: MethodStats;
  /** LISA E+H+2L with the other state policies (definitions task). */
  policies: Record<string, RunResult>;
  /** Split sizes per task (train, dev, test: disjoint). */
  splits: Record<string, { train: number; dev: number; test: number }>;
  sweep: SweepPoint[];
  lrs: Record<string, number>;
  skew: { full?: SkewEntry[]; lora?: SkewEntry[] };
  claims: Claim[];
  ablations?: {
    label: string;
    evalLoss: { mean: number; std: number };
    accuracy: { mean: number; std: number };
    n: number;
  }[];
  verified: boolean | null;
  seconds: number;
}

const MiB = 2 ** 20;
const mib = (b: number) => (b / MiB).toFixed(2);

/**
 * results.json: `{config, env, methods: {key: M}, weightNormSkew}` plus the details behind them.
 * `methods[key]`'s top-level numbers are the first seed's; `methods[key].seeds` and `.stats` (mean,
 * std, n, values per task; accuracy's Wilson interval) cover every seed.
 */
export function resultsJson(r: ExperimentRecord): Record<string, unknown> {
  const methods: Record<string, unknown> = {};
  for (const [key, { definitions: d, arithmetic: a }] of Object.entries(r.runs)) {
    methods[key] = {
      // trainLoss and evalLoss: the instruction task; accuracy: the arithmetic task's exact match.
      trainLoss: d.trainLoss,
      evalLoss: d.evalLoss,
      accuracy: a.accuracy,
      msPerStep: d.msPerStep,
      tokensPerSec: d.tokensPerSec,
      compiles: d.compiles,
      memory: { peakBytes: d.memory.peakBytes, peak: d.memory.peak },
      lr: d.lr,
      tasks: { definitions: summary(d), arithmetic: summary(a) },
      seeds: r.seedRuns[key]?.definitions.map((x) => x.seed) ?? [d.seed],
      stats: r.stats[key] ?? null,
    };
  }
  return {
    config: { ...r.config, configHash: r.configHash, command: r.command },
    env: r.env,
    methods,
    weightNormSkew: r.skew,
    base: r.base,
    beforeFineTuning: Object.fromEntries(
      Object.entries(r.before).map(([t, b]) => [t, {
        ...b,
        wilson: b.hits === null ? null : wilson(b.hits, b.heldOut),
      }]),
    ),
    majorityAnswer: r.majority,
    claimRule: CLAIM_RULE,
    splits: r.splits,
    lrSweep: r.sweep,
    learningRates: r.lrs,
    policies: Object.fromEntries(
      Object.entries(r.policies).map(([k, v]) => [k, { ...summary(v), timeline: v.timeline }]),
    ),
    claims: r.claims,
    ablations: r.ablations ?? null,
    verified: r.verified,
    seconds: r.seconds,
  };
}

function summary(x: RunResult): Record<string, unknown> {
  return {
    trainLoss: x.trainLoss,
    evalLoss: x.evalLoss,
    accuracy: x.accuracy,
    hits: x.hits,
    split: x.split,
    heldOut: x.heldOut,
    msPerStep: x.msPerStep,
    tokensPerSec: x.tokensPerSec,
    compiles: x.compiles,
    memory: x.memory,
    lr: x.lr,
  };
}

function label(r: ExperimentRecord, key: string): string {
  return r.specs.find((s) => s.key === key)?.label ?? key;
}

/** The SVG plots by file name. */
export function plots(r: ExperimentRecord): Record<string, string> {
  const keys = Object.keys(r.runs);
  const out: Record<string, string> = {};
  out["loss_curves.svg"] = lineChart(
    "Training loss (definitions task)",
    "step",
    "loss (nats/token)",
    keys.map((k) => ({ name: label(r, k), y: r.runs[k].definitions.trainLoss })),
  );
  out["memory_by_category.svg"] = stackedBars(
    "Peak memory by category (our accounting)",
    "MiB",
    keys.map((k) => label(r, k)),
    CATEGORIES.map((c) => ({ name: c, y: keys.map((k) => r.runs[k].definitions.memory.peak[c] / MiB) })),
  );
  const timelines: [string, RunResult][] = [];
  if (r.runs.lisa) timelines.push(["LISA reset", r.runs.lisa.definitions]);
  for (const [k, v] of Object.entries(r.policies)) timelines.push([`LISA ${k.replace("lisa_", "")}`, v]);
  if (r.runs.full) timelines.push(["full", r.runs.full.definitions]);
  if (r.runs.lora) timelines.push(["LoRA r=8", r.runs.lora.definitions]);
  const switches = r.runs.lisa
    ? r.runs.lisa.definitions.timeline.filter((t, i, a) =>
      i > 0 && t.activeLayers.join() !== a[i - 1].activeLayers.join()
    ).map((t) => t.step)
    : [];
  out["memory_timeline.svg"] = lineChart(
    "Optimizer memory per step (dashed: LISA redraws its layers)",
    "step",
    "optimizer MiB (peak in step)",
    timelines.map(([name, v]) => ({ name, y: v.timeline.map((t) => t.memory.optimizer / MiB) })),
    { marks: switches },
  );
  out["memory_timeline_total.svg"] = lineChart(
    "Total live memory per step (peak in step)",
    "step",
    "MiB",
    timelines.map(([name, v]) => ({
      name,
      y: v.timeline.map((t) => CATEGORIES.reduce((s, c) => s + t.memory[c], 0) / MiB),
    })),
    { marks: switches },
  );
  if (r.skew.full && r.skew.lora) {
    const layers = r.skew.full.map((e) => e.layer);
    out["weight_norm_skew.svg"] = groupedBars("Mean weight norm per layer (log scale)", "‖θ‖", layers, [
      { name: "full", y: r.skew.full.map((e) => e.weightNorm) },
      { name: "LoRA r=8 (A, B)", y: r.skew.lora.map((e) => e.weightNorm) },
      { name: "LoRA r=8 (s·B·A)", y: r.skew.lora.map((e) => e.effectiveNorm ?? e.weightNorm) },
    ], true);
    out["update_norm_skew.svg"] = groupedBars(
      "Mean update norm ‖θ_t − θ_0‖ per layer (log scale)",
      "‖θ_t − θ_0‖",
      layers,
      [
        { name: "full", y: r.skew.full.map((e) => e.updateNorm) },
        { name: "LoRA r=8", y: r.skew.lora.map((e) => e.updateNorm) },
      ],
      true,
    );
  }
  return out;
}

/** Header lines of a peak-memory table: method, each category, total (MiB). */
export function memoryHeader(): string[] {
  return [
    `| method | ${CATEGORIES.join(" | ")} | total |`,
    `| --- | ${CATEGORIES.map(() => "---").join(" | ")} | --- |`,
  ];
}

/** One row of a {@link memoryHeader} table. */
export function memoryRow(name: string, m: { peakBytes: number; peak: CategoryBytes }): string {
  return `| ${name} | ${CATEGORIES.map((c) => mib(m.peak[c])).join(" | ")} | ${mib(m.peakBytes)} |`;
}

/** report.md. */
export function markdown(r: ExperimentRecord): string {
  const keys = Object.keys(r.runs);
  const f = (x: number | null, d = 3) => (x === null || !Number.isFinite(x) ? "–" : x.toFixed(d));
  const lines: string[] = [];
  lines.push(`# LISA vs LoRA vs full fine-tuning — ${r.config.preset} preset`, "");
  lines.push(
    `Run with \`${r.command}\` on ${r.env.adapter} (backend ${r.env.backend}, ${r.env.kernels} kernels), Deno ${r.env.deno}, ${r.env.os}, commit ${r.env.commit}${
      r.env.dirty ? " (with uncommitted changes)" : ""
    }; config hash \`${r.configHash}\`; ${Math.round(r.seconds)} s in all.`,
    "",
  );
  lines.push("## What was run", "");
  if (typeof r.config.scale === "number" && r.config.scale !== 1) {
    lines.push(
      `**Reduced run**: \`--scale ${r.config.scale}\` multiplied every step count and data size of the ${r.config.preset} preset ` +
        "by that factor (the model is unchanged): it shows the comparison runs end to end, not what the preset measures.",
      "",
    );
  }
  const c = r.config as Record<string, unknown>;
  const t = c.tasks as Record<"definitions" | "arithmetic", { blockSize: number; steps: number }>;
  const seedList = Object.values(r.seedRuns)[0]?.definitions.map((x) => x.seed) ?? [c.seed];
  const split = (s: { train: number; dev: number; test: number } | undefined) =>
    s ? `${s.train}/${s.dev}/${s.test}` : "–";
  lines.push(
    `- Base model: ${(c.model as { family?: string }).family === "llama" ? "LLaMA" : "GPT-2"}, ${
      JSON.stringify(c.model)
    }, pretrained on the Brown corpus (${r.base.steps} steps, validation loss ${f(r.base.valLoss)})${
      r.base.reused ? ", reused from the cache" : `, ${Math.round(r.base.seconds)} s`
    } (\`${r.base.dir}\`).`,
    `- Tasks (seed ${c.seed}): *definitions* — WordNet nouns, \`What does "word" mean?\` → the definition, loss on the response only; ` +
      "*arithmetic* — generated problems, the successor of a digit (`Q: Ann's pens, one more than 7` → `8`), " +
      "exact-match accuracy of greedy decoding (the answer's tokens through its newline).",
    `- Every method, per task, the same steps and rows (definitions: ${t.definitions.steps} steps of ${c.batchSize}×${t.definitions.blockSize} tokens; ` +
      `arithmetic: ${t.arithmetic.steps} steps of ${c.batchSize}×${t.arithmetic.blockSize}), the same batches for a seed, AdamW (weight decay 0), ` +
      `cosine schedule with 10% warmup, gradient clipping at 1. LoRA on all linear layers (alpha = 2r); LISA's K = ${c.period}, state policy reset.`,
    `- Seeds: full, LoRA r=8 and LISA E+H+2L run with fine-tuning seeds ${
      seedList.join(", ")
    } (batch order, LoRA init and dropout, LISA's layer draws); the other configurations with seed ${c.seed} only. ` +
      "Tables give mean ± sample std over seeds.",
    `- Splits (disjoint, from the seed): definitions ${split(r.splits.definitions)}, arithmetic ${
      split(r.splits.arithmetic)
    }. Every choice is made on dev, every reported loss and accuracy comes from test.`,
    `- Learning rate per method family from a sweep of ${c.sweepSteps}-step runs on the definitions task, by dev loss:`,
    "",
  );
  lines.push("| family | learning rate | dev loss | chosen |", "| --- | --- | --- | --- |");
  for (const p of r.sweep) {
    lines.push(`| ${p.family} | ${p.lr} | ${f(p.devLoss)} | ${r.lrs[p.family] === p.lr ? "✓" : ""} |`);
  }
  lines.push("", "## Results", "");
  const pm = (x: Stat, d = 3) => (x.n > 1 ? `${f(x.mean, d)} ± ${f(x.std, d)}` : f(x.mean, d));
  const interval = (w: [number, number] | null) =>
    w ? ` [${(w[0] * 100).toFixed(1)}, ${(w[1] * 100).toFixed(1)}]` : "";
  lines.push(
    "| method | lr | seeds | definitions: test loss | arithmetic: test loss | arithmetic: test accuracy [95% Wilson] | peak MiB | ms/step | tokens/s |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  );
  const b = r.before;
  lines.push(
    `| before fine-tuning (base) | – | – | ${f(b.definitions.evalLoss)} | ${f(b.arithmetic.evalLoss)} | ${
      b.arithmetic.hits === null
        ? "–"
        : `${(b.arithmetic.accuracy! * 100).toFixed(1)}%${
          interval(wilson(b.arithmetic.hits, b.arithmetic.heldOut))
        }`
    } | – | – | – |`,
  );
  for (const k of keys) {
    const d = r.runs[k].definitions;
    const st = r.stats[k];
    const acc = st.arithmetic.accuracy;
    lines.push(
      `| ${label(r, k)} | ${d.lr} | ${st.definitions.testLoss.n} | ${pm(st.definitions.testLoss)} | ${
        pm(st.arithmetic.testLoss)
      } | ${
        acc === null
          ? "–"
          : `${pm({ ...acc, mean: acc.mean * 100, std: acc.std * 100 }, 1)}%${interval(st.arithmetic.wilson)}`
      } | ${mib(d.memory.peakBytes)} | ${f(st.definitions.msPerStep.mean, 0)} | ${f(d.tokensPerSec, 0)} |`,
    );
  }
  lines.push(
    "",
    `Always answering ${
      JSON.stringify(r.majority.answer.trim())
    } (the most frequent training answer) scores ${
      (r.majority.accuracy * 100).toFixed(1)
    }% on the arithmetic test: accuracy above that is what a method learned beyond the answers' frequencies.`,
    "",
    `Test losses and accuracy: mean ± std over the seeds counted; the Wilson interval is the test set's own sampling error ` +
      `for ${r.splits.arithmetic?.test ?? "–"} problems at the mean accuracy. ` +
      "ms/step: wall-clock per step averaged over each window between loss readbacks, definitions task, mean over seeds; " +
      "kernel compiles, evaluations and the weight-norm samples are not counted. Peak memory and tokens/s: first seed.",
  );
  lines.push("", "### Peak memory by category (MiB, definitions task, our exact accounting)", "");
  lines.push(...memoryHeader());
  for (const k of keys) lines.push(memoryRow(label(r, k), r.runs[k].definitions.memory));
  for (const [k, v] of Object.entries(r.policies)) {
    lines.push(memoryRow(`LISA E+H+2L, ${k.replace("lisa_", "")}`, v.memory));
  }
  lines.push(
    "",
    "![loss curves](loss_curves.svg)",
    "![memory by category](memory_by_category.svg)",
    "![optimizer memory per step](memory_timeline.svg)",
    "![total memory per step](memory_timeline_total.svg)",
    "",
  );
  if (r.skew.full && r.skew.lora) {
    lines.push("## Weight-norm skew (paper Fig. 2)", "");
    lines.push(
      "Mean over training steps of each layer's weight norm and of its update norm ‖θ_t − θ_0‖ (definitions task). For LoRA the " +
        "blocks' trainable weights are A and B; its embedding and head do not train, and their (frozen) norms are shown as the " +
        "paper's figure shows them — the update norms make that visible.",
      "",
    );
    lines.push(
      "| layer | full ‖θ‖ | LoRA ‖θ‖ (A, B) | LoRA ‖scaling·B·A‖ | full ‖θ_t − θ_0‖ | LoRA ‖θ_t − θ_0‖ |",
      "| --- | --- | --- | --- | --- | --- |",
    );
    r.skew.full.forEach((e, i) => {
      const l = r.skew.lora![i];
      const eff = isBlockGroup(l.layer) && l.effectiveNorm !== undefined
        ? l.effectiveNorm.toPrecision(3)
        : "(frozen)";
      lines.push(
        `| ${e.layer} | ${e.weightNorm.toPrecision(4)} | ${l.weightNorm.toPrecision(4)} | ${eff} | ${
          e.updateNorm.toPrecision(3)
        } | ${l.updateNorm.toPrecision(3)} |`,
      );
    });
    lines.push("", "![weight norms](weight_norm_skew.svg)", "![update norms](update_norm_skew.svg)", "");
  }
  lines.push("## Claims checked", "", CLAIM_RULE, "");
  lines.push("| claim | verdict | evidence |", "| --- | --- | --- |");
  for (const cl of r.claims) lines.push(`| ${cl.claim} | ${cl.verdict} | ${cl.evidence} |`);
  if (r.ablations) {
    lines.push("", "## Ablations (γ, K; mean ± std over seeds)", "");
    lines.push(
      "| configuration | definitions test loss | arithmetic test accuracy | runs |",
      "| --- | --- | --- | --- |",
    );
    for (const a of r.ablations) {
      lines.push(
        `| ${a.label} | ${a.evalLoss.mean.toFixed(3)} ± ${a.evalLoss.std.toFixed(3)} | ${
          (a.accuracy.mean * 100).toFixed(1)
        } ± ${(a.accuracy.std * 100).toFixed(1)}% | ${a.n} |`,
      );
    }
  }
  lines.push("", "## Reproducibility", "");
  lines.push(
    `- Command: \`${r.command}\`; config hash \`${r.configHash}\` (SHA-256 of the config in results.json); seeds: base ${c.seed}, tasks ${c.seed}, fine-tuning ${
      seedList.join(", ")
    }.`,
    `- Commit ${r.env.commit}${r.env.dirty ? " with uncommitted changes" : ""}.`,
    `- ${
      r.verified === null
        ? "Not verified in this run (`--verify` reruns every fine-tuning run and asserts identical losses)."
        : r.verified
        ? "`--verify`: every fine-tuning run was repeated and gave bitwise identical losses."
        : "`--verify` FAILED: a rerun gave different losses."
    }`,
    "",
  );
  return lines.join("\n");
}

/**
 * Writes results.json (with `complete: true` and `runs`, every run's raw result by run id, which a
 * resumed experiment reuses), report.md and the plots into `dir`.
 */
export async function writeReport(
  dir: string,
  r: ExperimentRecord,
  runs: Record<string, RunResult> = {},
): Promise<void> {
  await getHost().mkdir(dir, { recursive: true });
  const results = { complete: true, ...resultsJson(r), runs };
  await writeFileAtomic(`${dir}/results.json`, JSON.stringify(results, null, 1) + "\n");
  for (const [name, svg] of Object.entries(plots(r))) await writeFileAtomic(`${dir}/${name}`, svg);
  await writeFileAtomic(`${dir}/report.md`, markdown(r));
}
