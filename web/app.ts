/**
 * The web page: pretrains the preset's base model on the Brown corpus (or takes a model folder the
 * user picks), then runs the experiment's comparison (experiments/comparison.ts: the learning-rate
 * sweep, every method on both tasks, LISA's state policies, statistics, skew and claims) exactly as
 * `deno task experiment` does, with live loss curves, memory per step and the final table; then
 * writes the CLI's report (report.md, results.json, plots) and offers it, with the fine-tuned models
 * and the LoRA adapter, as downloads. Files live in an in-memory host (core/host.ts); the server
 * (web/serve.ts) provides the corpus and the tasks.
 */
import { encodeDocuments, tokenizerFor } from "../core/data/tokenizer.ts";
import { evaluate } from "../core/evaluate.ts";
import { FullMethod } from "../core/finetune/full.ts";
import { LoraMethod } from "../core/finetune/lora.ts";
import { train } from "../core/finetune/trainer.ts";
import { type Gpu, requestGpu } from "../core/gpu.ts";
import { type FileHost, memoryHost, setHost } from "../core/host.ts";
import { loadModel, saveModel } from "../core/io/models.ts";
import { CATEGORIES } from "../core/memory.ts";
import { createModel } from "../core/nn/families.ts";
import { comparisonRunCount, hashOf, runComparison, runId } from "../experiments/comparison.ts";
import { type Preset, PRESETS, scalePreset } from "../experiments/presets.ts";
import { pretrainSetup } from "../experiments/pretrain_setup.ts";
import { type ExperimentRecord, writeReport } from "../experiments/report.ts";
import { runOne, type RunResult, type RunSpec } from "../experiments/runner.ts";
import { lineChart, type Series, stackedBars } from "../experiments/svg.ts";
import type { Task } from "../experiments/tasks.ts";
import { mimeType } from "./mime.ts";

const BASE = "/base";
const OUT = "/out";
const MiB = 2 ** 20;

const $ = (id: string) => document.getElementById(id)!;
const status = (text: string) => ($("status").textContent = text);

/** One run's live series, as steps are read back. */
interface LiveRun {
  loss: number[];
  total: number[];
  optimizer: number[];
  /** Steps where LISA's active blocks changed. */
  switches: number[];
}

/** Live series of the main runs (first seed) by task, then by method label. */
const live: Record<"definitions" | "arithmetic", Map<string, LiveRun>> = {
  definitions: new Map(),
  arithmetic: new Map(),
};

function draw(): void {
  const series = (m: Map<string, LiveRun>, pick: (v: LiveRun) => number[]): Series[] =>
    [...m].map(([name, v]) => ({ name, y: pick(v) }));
  for (const task of ["definitions", "arithmetic"] as const) {
    if (live[task].size > 0) {
      $(`loss-${task}`).innerHTML = lineChart(
        `Fine-tuning loss (${task})`,
        "step",
        "loss",
        series(live[task], (v) => v.loss),
      );
    }
  }
  const d = live.definitions;
  if (d.size === 0) return;
  const marks = d.get("LISA E+H+2L")?.switches ?? [];
  $("memory-chart").innerHTML = lineChart(
    "Peak memory per step, definitions (MiB)",
    "step",
    "MiB",
    series(d, (v) => v.total),
  );
  $("optimizer-chart").innerHTML = lineChart(
    "Optimizer state per step, definitions (MiB); dashed: LISA E+H+2L's layer draws",
    "step",
    "MiB",
    series(d, (v) => v.optimizer),
    { marks },
  );
}

/** The results table: every configuration, both tasks, memory by category, speed. */
function table(r: ExperimentRecord): string {
  const rows = r.specs.filter((s) => r.runs[s.key]).map((s) => {
    const m = r.runs[s.key];
    const st = r.stats[s.key];
    const mean = (v: { mean: number } | undefined, fallback: number) => (v ? v.mean : fallback);
    const acc = mean(st?.arithmetic.accuracy ?? undefined, m.arithmetic.accuracy ?? NaN);
    const seeds = st?.definitions.testLoss.n ?? 1;
    const peak = m.definitions.memory.peak;
    return `<tr data-key="${s.key}"><td>${s.label}</td><td>${r.lrs[s.method]}</td>` +
      `<td>${seeds}</td>` +
      `<td>${mean(st?.definitions.testLoss, m.definitions.evalLoss).toFixed(3)}</td>` +
      `<td>${mean(st?.arithmetic.testLoss, m.arithmetic.evalLoss).toFixed(3)}</td>` +
      `<td>${(acc * 100).toFixed(1)}%</td>` +
      CATEGORIES.map((c) => `<td data-category="${c}">${(peak[c] / MiB).toFixed(2)}</td>`).join("") +
      `<td>${(m.definitions.memory.peakBytes / MiB).toFixed(2)}</td>` +
      `<td>${Math.round(m.definitions.msPerStep)}</td><td>${
        Math.round(m.definitions.tokensPerSec)
      }</td></tr>`;
  });
  return `<table id="results"><tr><th>method</th><th>lr</th><th>seeds</th><th>definitions: test loss</th>` +
    `<th>arithmetic: test loss</th><th>arithmetic: accuracy</th>${
      CATEGORIES.map((c) => `<th>${c} MiB</th>`).join("")
    }<th>peak MiB</th><th>ms/step</th><th>tokens/s</th></tr>` + rows.join("") + "</table>";
}

/** A download link for the file at `path` in `host`. */
async function offer(host: FileHost, path: string, name: string): Promise<void> {
  const type = mimeType(name);
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([(await host.readFile(path)).slice()], { type }));
  a.download = name.replaceAll("/", "-");
  a.textContent = name;
  a.id = `download-${name.replace(/\W/g, "-")}`;
  $("downloads").append(a, " ");
}

async function fetchJson<T>(url: string): Promise<T> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  return await res.json() as T;
}

/** The user's model folder files, put into the in-memory host at BASE. */
async function putUserBase(host: FileHost, files: FileList): Promise<void> {
  const names = [...files].map((f) => f.name);
  for (const need of ["config.json", "model.safetensors"]) {
    if (!names.includes(need)) {
      throw new Error(
        `pick config.json and model.safetensors together (got ${names.join(", ") || "nothing"})`,
      );
    }
  }
  await host.mkdir(BASE, { recursive: true });
  for (const f of files) await host.writeFile(`${BASE}/${f.name}`, new Uint8Array(await f.arrayBuffer()));
}

/** The base model into BASE: the user's folder, or pretrained here as `deno task pretrain` does. */
async function makeBase(
  gpu: Gpu,
  host: FileHost,
  preset: Preset,
  seed: number,
): Promise<ExperimentRecord["base"]> {
  const t0 = performance.now();
  const userFiles = ($("base-files") as HTMLInputElement).files;
  if (userFiles && userFiles.length > 0) {
    await putUserBase(host, userFiles);
    status("checking the model you picked…");
    const { model } = await loadModel(gpu, BASE); // names the file and key on a malformed one
    model.dispose();
    return { dir: BASE, reused: true, valLoss: NaN, steps: 0, seconds: 0 };
  }
  // The corpus: a text file the user picks, else the Brown corpus (as `deno task pretrain`).
  const textFile = ($("data-file") as HTMLInputElement).files?.[0];
  status(textFile ? `reading ${textFile.name}…` : "fetching the Brown corpus…");
  const docs = textFile ? [await textFile.text()] : await fetchJson<string[]>("data/brown.json");
  const tokens = encodeDocuments(tokenizerFor(preset.model.vocabSize), docs);
  const setup = pretrainSetup(gpu, preset, tokens, seed, preset.steps);
  const model = createModel(gpu, preset.model, { seed });
  const losses: number[] = [];
  await train({
    model,
    method: new FullMethod(model),
    optimizer: setup.optimizer,
    nextBatch: () => setup.batcher.next(),
    schedule: setup.schedule,
    steps: preset.steps,
    maxGradNorm: 1,
    onStep: (r) => {
      losses.push(r.loss);
      status(`pretraining the base model: step ${r.step + 1}/${preset.steps}, loss ${r.loss.toFixed(3)}`);
      $("pretrain-chart").innerHTML = lineChart(
        `Pretraining loss (${textFile?.name ?? "Brown corpus"})`,
        "step",
        "loss",
        [
          { name: "base", y: losses },
        ],
      );
    },
  });
  status("evaluating the base model…");
  const { loss: valLoss } = await evaluate(model, setup.evalBatches);
  await saveModel(model, BASE);
  setup.optimizer.dispose();
  model.dispose();
  return {
    dir: BASE,
    reused: false,
    valLoss,
    steps: losses.length,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** Runs the comparison; returns the record (its files are in OUT) and the kept models' keys. */
async function run(gpu: Gpu, host: FileHost): Promise<{ record: ExperimentRecord; models: string[] }> {
  const form = new FormData($("form") as HTMLFormElement);
  // ?scale=F shrinks the run as `deno task experiment --scale F` does (the browser test uses it).
  const scale = Number(new URLSearchParams(location.search).get("scale") ?? "1");
  const preset: Preset = scalePreset(PRESETS[String(form.get("preset"))], scale);
  const seed = Number(($("seed") as HTMLInputElement).value) | 0;
  const extra = form.getAll("method").map(String);
  live.definitions.clear();
  live.arithmetic.clear();
  const t0 = performance.now();
  const base = await makeBase(gpu, host, preset, seed);

  const tasks = await fetchJson<Task[]>(`data/tasks.json?preset=${preset.name}&seed=${seed}&scale=${scale}`);
  const total = comparisonRunCount(preset, extra);
  let count = 0;
  const models: string[] = [];
  const done: Record<string, RunResult> = {};
  const runOnPage = async (r: RunSpec, what: string): Promise<RunResult> => {
    count++;
    status(`run ${count} of ${total}: ${what}`);
    const main = r.split === "test" && r.seed === seed && !r.state;
    const series: LiveRun = { loss: [], total: [], optimizer: [], switches: [] };
    if (main) live[r.task.name as "definitions" | "arithmetic"].set(r.spec.label, series);
    let last = "";
    // This run's memory by category per step, a stacked bar each (labelled with LISA's active blocks).
    const byCategory = CATEGORIES.map((c) => ({ name: c, y: [] as number[] }));
    const stepLabels: string[] = [];
    const result = await runOne(gpu, {
      ...r,
      onStep: (s) => {
        if (!main) return;
        series.loss.push(s.loss);
        series.total.push(s.peakTotal / MiB);
        series.optimizer.push(s.memory.optimizer / MiB);
        const layers = s.activeLayers.join(",");
        if (r.spec.method === "lisa" && layers !== last) series.switches.push(series.loss.length - 1);
        last = layers;
        CATEGORIES.forEach((c, i) => byCategory[i].y.push(s.memory[c] / MiB));
        stepLabels.push(r.spec.method === "lisa" ? `${s.step} [${layers}]` : `${s.step}`);
        $("category-chart").innerHTML = stackedBars(
          `Memory by category per step: ${r.spec.label}, ${r.task.name}` +
            (r.spec.method === "lisa" ? " (active blocks in brackets)" : ""),
          "MiB",
          stepLabels,
          byCategory,
        );
        draw();
      },
      // The definitions task's fine-tuned models (first seed) are kept for download: full and LISA
      // E+H+2L as model folders, LoRA r=8 as its PEFT adapter.
      afterRun: async (model, method) => {
        if (!main || r.task.name !== "definitions" || !["full", "lora", "lisa"].includes(r.spec.key)) return;
        const dir = `${OUT}/models/${r.spec.key}`;
        if (method instanceof LoraMethod) await method.exportPeft(dir, "base");
        else await saveModel(model, dir);
        models.push(r.spec.key);
      },
    });
    done[runId(r)] = result;
    return result;
  };
  const where = `${gpu.info.description} (${gpu.kernels} kernels)`;
  const comparison = await runComparison({
    gpu,
    preset,
    seed,
    baseDir: BASE,
    tasks,
    run: runOnPage,
    log: () => {},
    where,
    extra,
  });
  // The CLI's config (and hash); a subset of the extra configurations is recorded in it.
  const subset = ["lora_r32", "lisa_1l", "lisa_4l"].some((k) => !extra.includes(k));
  const config = {
    preset: preset.name,
    scale,
    model: preset.model,
    seed,
    ...preset.experiment,
    ...(subset ? { extraMethods: extra } : {}),
  };
  const record: ExperimentRecord = {
    command: `deno task web: preset ${preset.name}, seed ${seed}${scale === 1 ? "" : `, ?scale=${scale}`}`,
    configHash: await hashOf(config),
    config,
    env: {
      adapter: gpu.info.description,
      backend: gpu.info.backend,
      kernels: gpu.kernels,
      deno: `none (browser: ${navigator.userAgent})`,
      os: navigator.platform,
      commit: "unknown",
      dirty: false,
    },
    base,
    ...comparison,
    seconds: (performance.now() - t0) / 1000,
  };
  await writeReport(OUT, record, done);
  return { record, models };
}

async function main(): Promise<void> {
  let gpu: Gpu;
  try {
    gpu = await requestGpu();
  } catch (e) {
    $("adapter").innerHTML =
      `<strong>No WebGPU here</strong> (${(e as Error).message}). WebGPU is on by default ` +
      "in Chrome and Edge 113+ (Windows, macOS, ChromeOS) and Chrome 121+ on Android; on Linux start Chrome or " +
      "Chromium with <code>--enable-unsafe-webgpu --enable-features=Vulkan</code> (no GPU: add " +
      "<code>--enable-unsafe-swiftshader</code>); Firefox 141+ on Windows, and Safari 26+.";
    document.body.dataset.state = "no-webgpu";
    return;
  }
  const l = gpu.info.limits;
  $("adapter").textContent =
    `Adapter: ${gpu.info.description} (${gpu.kernels} kernels); max storage binding ` +
    `${
      (l.maxStorageBufferBindingSize / MiB).toFixed(0)
    } MiB, workgroup storage ${l.maxComputeWorkgroupStorageSize} B, ` +
    `${l.maxStorageBuffersPerShaderStage} storage buffers per stage.`;
  const button = $("run") as HTMLButtonElement;
  button.disabled = false;
  document.body.dataset.state = "ready";
  $("form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    $("error").textContent = "";
    $("downloads").textContent = "";
    $("table").textContent = "";
    document.body.dataset.state = "running";
    const host = memoryHost();
    setHost(host);
    try {
      const { record, models } = await run(gpu, host);
      $("table").innerHTML = table(record);
      if (record.skew.full) {
        $("skew-chart").innerHTML = new TextDecoder().decode(
          await host.readFile(`${OUT}/weight_norm_skew.svg`),
        );
      }
      for (const e of await host.readDir(OUT)) if (e.isFile) await offer(host, `${OUT}/${e.name}`, e.name);
      for (const key of models) {
        for (const e of await host.readDir(`${OUT}/models/${key}`)) {
          await offer(host, `${OUT}/models/${key}/${e.name}`, `${key}/${e.name}`);
        }
      }
      status(`done in ${record.seconds.toFixed(0)} s`);
      document.body.dataset.state = "done";
    } catch (e) {
      $("error").textContent = `Stopped: ${(e as Error).message}`;
      status("stopped");
      document.body.dataset.state = "error";
    } finally {
      button.disabled = false;
    }
  });
}

main();
