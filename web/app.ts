/**
 * The web page: pretrains the preset's base model on the Brown corpus (or takes a GPT-2 folder the
 * user picks), then runs the experiment's learning-rate sweep and fine-tunes each chosen method on
 * both tasks, with live loss curves, memory by category per step and the final table. Files live in
 * an in-memory host (core/host.ts): the base model is saved there and every run loads it, through the
 * same `runOne` as `deno task experiment`. The server (web/serve.ts) provides the corpus and the tasks.
 */
import { encodeDocuments, tokenizerFor } from "../core/data/tokenizer.ts";
import { FullMethod } from "../core/finetune/full.ts";
import { train } from "../core/finetune/trainer.ts";
import { type Gpu, requestGpu } from "../core/gpu.ts";
import { memoryHost, setHost } from "../core/host.ts";
import { loadModel, saveModel } from "../core/io/models.ts";
import { CATEGORIES, type CategoryBytes } from "../core/memory.ts";
import { createModel } from "../core/nn/families.ts";
import { pickLearningRates, type SweepPoint } from "../experiments/analyses.ts";
import { type Preset, PRESETS, scalePreset } from "../experiments/presets.ts";
import { pretrainSetup } from "../experiments/pretrain_setup.ts";
import { type MethodSpec, runOne, type RunResult, type RunSpec } from "../experiments/runner.ts";
import { lineChart, type Series } from "../experiments/svg.ts";
import type { Task } from "../experiments/tasks.ts";

/** The configurations the page offers (the experiment's keys and labels). */
const SPECS: MethodSpec[] = [
  { key: "full", label: "full", method: "full" },
  { key: "lora", label: "LoRA r=8", method: "lora", rank: 8 },
  { key: "lisa_1l", label: "LISA E+H+1L", method: "lisa", gamma: 1 },
  { key: "lisa", label: "LISA E+H+2L", method: "lisa", gamma: 2 },
];
const BASE = "/base";
const MiB = 2 ** 20;

const $ = (id: string) => document.getElementById(id)!;
const status = (text: string) => ($("status").textContent = text);

/** What the page measured; offered as results.json. */
interface PageResults {
  preset: string;
  /** The `?scale` the run was reduced by (1: the preset as it is). */
  scale: number;
  seed: number;
  adapter: string;
  kernels: string;
  base: { steps: number; losses: number[]; source: "pretrained" | "user" };
  lrSweep: SweepPoint[];
  lrs: Record<"full" | "lora" | "lisa", number>;
  methods: Record<string, { definitions: RunResult; arithmetic: RunResult }>;
}

/** One run's live series, as steps are read back. */
interface LiveRun {
  loss: number[];
  total: number[];
  optimizer: number[];
  /** Steps where LISA's active blocks changed. */
  switches: number[];
}

/** Live series by task, then by method label. */
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
  const marks = [...d].find(([name]) => name.startsWith("LISA"))?.[1].switches ?? [];
  $("memory-chart").innerHTML = lineChart(
    "Peak memory per step, definitions (MiB)",
    "step",
    "MiB",
    series(d, (v) => v.total),
  );
  $("optimizer-chart").innerHTML = lineChart(
    "Optimizer state per step, definitions (MiB); dashed: LISA's layer draws",
    "step",
    "MiB",
    series(d, (v) => v.optimizer),
    { marks },
  );
}

function table(r: PageResults): string {
  const rows = Object.entries(r.methods).map(([key, m]) => {
    const label = SPECS.find((s) => s.key === key)!.label;
    const peak = m.definitions.memory.peak;
    const acc = m.arithmetic.accuracy === null ? "–" : `${(m.arithmetic.accuracy * 100).toFixed(1)}%`;
    return `<tr><td>${label}</td><td>${r.lrs[SPECS.find((s) => s.key === key)!.method]}</td><td>${
      m.definitions.evalLoss.toFixed(3)
    }</td>` +
      `<td>${m.arithmetic.evalLoss.toFixed(3)}</td><td>${acc}</td>` +
      CATEGORIES.map((c) => `<td data-category="${c}">${(peak[c] / MiB).toFixed(2)}</td>`).join("") +
      `<td>${(m.definitions.memory.peakBytes / MiB).toFixed(2)}</td><td>${
        Math.round(m.definitions.msPerStep)
      }</td></tr>`;
  });
  return `<table id="results"><tr><th>method</th><th>lr</th><th>definitions: test loss</th><th>arithmetic: test loss</th>` +
    `<th>arithmetic: accuracy</th>${
      CATEGORIES.map((c) => `<th>${c} MiB</th>`).join("")
    }<th>peak MiB</th><th>ms/step</th></tr>` +
    rows.join("") + "</table>";
}

function offer(name: string, text: string, type: string): void {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = name;
  a.textContent = name;
  a.id = `download-${name.replace(/\W/g, "-")}`;
  $("downloads").append(a);
}

async function fetchJson<T>(url: string): Promise<T> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  return await res.json() as T;
}

/** The user's GPT-2 or LLaMA folder files, put into the in-memory host at BASE. */
async function putUserBase(host: ReturnType<typeof memoryHost>, files: FileList): Promise<void> {
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

async function run(gpu: Gpu): Promise<PageResults> {
  const form = new FormData($("form") as HTMLFormElement);
  // ?scale=F shrinks the run as `deno task experiment --scale F` does (the browser test uses it).
  const scale = Number(new URLSearchParams(location.search).get("scale") ?? "1");
  const preset: Preset = scalePreset(PRESETS[String(form.get("preset"))], scale);
  const chosen = new Set(form.getAll("method").map(String));
  const seed = Number(($("seed") as HTMLInputElement).value) | 0;
  const specs = SPECS.filter((s) => chosen.has(s.key));
  if (specs.length === 0) throw new Error("choose at least one method");
  const host = memoryHost();
  setHost(host);
  live.definitions.clear();
  live.arithmetic.clear();
  $("downloads").textContent = "";
  $("table").textContent = "";

  // 1. The base model: the user's folder, or pretrained here as `deno task pretrain` does.
  const userFiles = ($("base-files") as HTMLInputElement).files;
  const baseLosses: number[] = [];
  let source: "user" | "pretrained" = "pretrained";
  if (userFiles && userFiles.length > 0) {
    source = "user";
    await putUserBase(host, userFiles);
    status("checking the model you picked…");
    const { model } = await loadModel(gpu, BASE); // names the file and key on a malformed one
    model.dispose();
  } else {
    status("fetching the Brown corpus…");
    const docs = await fetchJson<string[]>("data/brown.json");
    const tokens = encodeDocuments(tokenizerFor(preset.model.vocabSize), docs);
    const setup = pretrainSetup(gpu, preset, tokens, seed, preset.steps);
    const model = createModel(gpu, preset.model, { seed });
    await train({
      model,
      method: new FullMethod(model),
      optimizer: setup.optimizer,
      nextBatch: () => setup.batcher.next(),
      schedule: setup.schedule,
      steps: preset.steps,
      maxGradNorm: 1,
      onStep: (r) => {
        baseLosses.push(r.loss);
        status(`pretraining the base model: step ${r.step + 1}/${preset.steps}, loss ${r.loss.toFixed(3)}`);
        $("pretrain-chart").innerHTML = lineChart("Pretraining loss (Brown corpus)", "step", "loss", [{
          name: "base",
          y: baseLosses,
        }]);
      },
    });
    await saveModel(model, BASE);
    setup.optimizer.dispose();
    model.dispose();
  }

  // 2. Tasks (made by the server with the experiment's code), the learning-rate sweep, the runs.
  const x = preset.experiment;
  const tasks = await fetchJson<Task[]>(`data/tasks.json?preset=${preset.name}&seed=${seed}&scale=${scale}`);
  const [definitions, arithmetic] = tasks;
  const common = { base: BASE, batchSize: x.batchSize, period: x.period, seed };
  // Per family, the experiment's sweep: its E+H+2L / r=8 / full configuration on the definitions dev split.
  const sweep: SweepPoint[] = [];
  for (const family of new Set(specs.map((s) => s.method))) {
    const s = SPECS.find((c) => c.key === family)!;
    for (const lr of x.lrs[family]) {
      status(`learning-rate sweep: ${family}, lr ${lr}`);
      const r = await runOne(gpu, {
        ...common,
        task: definitions,
        split: "dev",
        spec: s,
        lr,
        blockSize: x.tasks.definitions.blockSize,
        steps: x.sweepSteps,
      });
      sweep.push({ family, lr, devLoss: r.evalLoss });
    }
  }
  // Families not chosen keep the sweep's first rate (pickLearningRates needs all three).
  for (const f of ["full", "lora", "lisa"] as const) {
    if (!sweep.some((p) => p.family === f)) sweep.push({ family: f, lr: x.lrs[f][0], devLoss: 0 });
  }
  const lrs = pickLearningRates(sweep);
  const results: PageResults = {
    preset: preset.name,
    scale,
    seed,
    adapter: gpu.info.description,
    kernels: gpu.kernels,
    base: { steps: baseLosses.length, losses: baseLosses, source },
    lrSweep: sweep,
    lrs,
    methods: {},
  };
  for (const s of specs) {
    const byTask = {} as { definitions: RunResult; arithmetic: RunResult };
    for (const task of [definitions, arithmetic]) {
      const series: LiveRun = { loss: [], total: [], optimizer: [], switches: [] };
      live[task.name as "definitions" | "arithmetic"].set(s.label, series);
      let last = "";
      const onStep = (
        r: { loss: number; memory: CategoryBytes; peakTotal: number; activeLayers: number[] },
      ) => {
        series.loss.push(r.loss);
        series.total.push(r.peakTotal / MiB);
        series.optimizer.push(r.memory.optimizer / MiB);
        const layers = r.activeLayers.join(",");
        if (s.method === "lisa" && layers !== last) series.switches.push(series.loss.length - 1);
        last = layers;
        draw();
      };
      status(`fine-tuning: ${s.label} on ${task.name}`);
      const spec: RunSpec = {
        ...common,
        task,
        split: "test",
        spec: s,
        lr: lrs[s.method],
        blockSize: x.tasks[task.name as "definitions" | "arithmetic"].blockSize,
        steps: x.tasks[task.name as "definitions" | "arithmetic"].steps,
        accuracy: task.exactMatch,
        onStep,
      };
      byTask[task.name as "definitions" | "arithmetic"] = await runOne(gpu, spec);
    }
    results.methods[s.key] = byTask;
    $("table").innerHTML = table(results);
  }
  return results;
}

async function main(): Promise<void> {
  let gpu: Gpu;
  try {
    gpu = await requestGpu();
  } catch (e) {
    $("adapter").innerHTML =
      `<strong>No WebGPU here</strong> (${(e as Error).message}). WebGPU is on by default in ` +
      "Chrome and Edge 113+ (Windows, macOS, ChromeOS) and Chrome 121+ on Android; on Linux start Chrome or Chromium " +
      "with <code>--enable-unsafe-webgpu --enable-features=Vulkan</code> (no GPU: add <code>--enable-unsafe-swiftshader</code>); " +
      "Firefox 141+ on Windows, and Safari 26+.";
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
    document.body.dataset.state = "running";
    const t0 = performance.now();
    try {
      const r = await run(gpu);
      offer("results.json", JSON.stringify(r, null, 1) + "\n", "application/json");
      status(`done in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
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
