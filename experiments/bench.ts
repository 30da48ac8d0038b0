/**
 * `deno task bench [--json] [--filter NAME]`: kernel and runtime benchmarks with their peers,
 * measured in the same run. Prints a table, or one JSON object per line with --json.
 */
import { parseArgs } from "node:util";
import { type Gpu, requestGpu } from "../core/gpu.ts";
import { matmul } from "../core/ops/matmul.ts";
import { type MatmulVariant, matmulVariant } from "../kernels/select.ts";
import { empty } from "../core/tensor.ts";
import { fillKernel } from "../kernels/elementwise.ts";
import { type StepConfig, torchMatmulMs, torchTrainStepMs } from "./peers.ts";
import { backward } from "../core/autograd.ts";
import { GPT } from "../core/nn/gpt.ts";
import { AdamW } from "../core/optim/adamw.ts";
import { tidy } from "../core/tensor.ts";

/** One measured row. */
export interface BenchResult {
  bench: string;
  shape: string;
  variant?: string;
  ms: number;
  gflops?: number;
  peer?: string;
  peerMs?: number | null;
  peerGflops?: number | null;
  adapter: string;
  note?: string;
}

/**
 * Best-of-`reps` milliseconds per call of `record`: after a warm-up (pipeline compiles), enough
 * calls go into one submit to fill ~`budgetMs`, so the ≥ 11 ms wait per submit is amortized.
 */
async function timeIt(gpu: Gpu, record: () => void, reps = 7, budgetMs = 300): Promise<number> {
  record(); // warm-up: compiles pipelines
  await gpu.submit();
  await gpu.idle();
  let t0 = performance.now();
  record();
  await gpu.submit();
  await gpu.idle();
  const once = performance.now() - t0;
  const perSubmit = Math.max(2, Math.min(200, Math.round(budgetMs / once)));
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    t0 = performance.now();
    for (let i = 0; i < perSubmit; i++) record();
    await gpu.submit();
    await gpu.idle();
    best = Math.min(best, (performance.now() - t0) / perSubmit);
  }
  return best;
}

/** Matmul M×K · K×N (and the transposed forms backward uses) for the default variant. */
async function benchMatmul(gpu: Gpu, variant: MatmulVariant): Promise<BenchResult[]> {
  const shapes: [number, number, number, string][] = [
    [512, 512, 512, "A·B"],
    [1024, 1024, 1024, "A·B"],
    [4096, 1024, 256, "A·B"],
    [4096, 256, 1024, "A·Bᵀ"],
    [256, 1024, 4096, "Aᵀ·B"],
  ];
  const out: BenchResult[] = [];
  for (const [m, n, k, form] of shapes) {
    const transA = form === "Aᵀ·B", transB = form === "A·Bᵀ";
    // The peer runs first: llvmpipe's worker threads can keep a core busy for a while after our work.
    const peerMs = await torchMatmulMs(m, n, k, transA, transB);
    const a = empty(gpu, transA ? [k, m] : [m, k], { name: "a" });
    const b = empty(gpu, transB ? [n, k] : [k, n], { name: "b" });
    a.fill(0.5);
    b.fill(0.25);
    const flops = 2 * m * n * k;
    const ms = await timeIt(gpu, () => matmul(a, b, { transA, transB, variant }).dispose());
    out.push({
      bench: "matmul",
      shape: `${m}x${n}x${k}`,
      variant: `${variant} ${form}`,
      ms,
      gflops: flops / ms / 1e6,
      peer: "pytorch",
      peerMs,
      peerGflops: peerMs === null ? null : flops / peerMs / 1e6,
      adapter: gpu.info.description,
    });
    a.dispose();
    b.dispose();
  }
  return out;
}

/** The training-step configuration of the bench (issue: 6 layers, d 256, 4 heads, T 128, B 8, V 4096). */
export const STEP_CONFIG: StepConfig = {
  nLayer: 6,
  nEmbd: 256,
  nHead: 4,
  vocabSize: 4096,
  blockSize: 128,
  batchSize: 8,
};

/**
 * One GPT-2 training step (forward, backward, AdamW, one submit, loss read back) beside PyTorch's
 * on the CPU: ms/step, tokens/s, peak memory, dispatches per step, and the step's GFLOP/s.
 */
async function benchTrainStep(gpu: Gpu): Promise<BenchResult[]> {
  const c = STEP_CONFIG;
  // The peer runs first: llvmpipe's worker threads can keep a core busy for a while after our work.
  const peer = await torchTrainStepMs(c);
  const model = new GPT(gpu, {
    vocabSize: c.vocabSize,
    blockSize: c.blockSize,
    nLayer: c.nLayer,
    nHead: c.nHead,
    nEmbd: c.nEmbd,
  });
  const opt = new AdamW(gpu, { weightDecay: 0.1 });
  const params = model.namedParameters();
  const n = c.batchSize * c.blockSize;
  const ids = Uint32Array.from({ length: n }, (_, i) => (i * 7919) % c.vocabSize);
  const input = {
    ids,
    targets: ids.map((x) => (x + 1) % c.vocabSize),
    batchSize: c.batchSize,
    blockSize: c.blockSize,
  };
  let dispatches = 0;
  const step = async () => {
    const loss = tidy(() => model.loss(input));
    backward(loss);
    opt.step(params, 1e-4, 1);
    for (const [, p] of params) p.zeroGrad();
    const value = loss.read();
    loss.dispose();
    dispatches = gpu.pendingDispatches;
    await gpu.submit();
    return (await value)[0];
  };
  for (let i = 0; i < 2; i++) await step();
  if (gpu.profiling) await gpu.takeProfile();
  gpu.memory.resetPeak();
  let best = Infinity;
  for (let i = 0; i < 4; i++) {
    const t0 = performance.now();
    await step();
    best = Math.min(best, performance.now() - t0);
  }
  const peak = gpu.memory.stats().peakTotal;
  // 6·N·tokens for the weights (tied head counted as the V×C matmul it is) + causal attention.
  const weights = model.parameterCount() - c.blockSize * c.nEmbd;
  const flops = 6 * weights * n + 6 * c.nLayer * c.batchSize * c.blockSize * c.blockSize * c.nEmbd;
  opt.dispose();
  model.dispose();
  return [{
    bench: "train_step",
    shape: `L${c.nLayer} d${c.nEmbd} h${c.nHead} T${c.blockSize} B${c.batchSize} V${c.vocabSize}`,
    variant: `${dispatches} dispatches, peak ${(peak / 2 ** 20).toFixed(0)} MiB`,
    ms: best,
    gflops: flops / best / 1e6,
    peer: peer ? `pytorch (${peer.threads} threads)` : "pytorch (not installed)",
    peerMs: peer?.ms ?? null,
    peerGflops: peer ? flops / peer.ms / 1e6 : null,
    adapter: gpu.info.description,
    note: `${Math.round(n / (best / 1000))} tok/s${peer ? `, ${(peer.ms / best).toFixed(2)}× PyTorch` : ""}`,
  }];
}

/** Cost of one small dispatch when many share a submit, and of a submit + readback round trip. */
async function benchDispatch(gpu: Gpu): Promise<BenchResult[]> {
  const t = empty(gpu, [64], { name: "tiny" });
  const k = fillKernel(64, 1);
  const n = 2000;
  const ms = await timeIt(
    gpu,
    () => {
      for (let i = 0; i < n; i++) gpu.dispatch(k, [t.binding("bench")], [1]);
    },
    1,
    3,
  );
  let rt = Infinity;
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    t.fill(2);
    await t.download();
    rt = Math.min(rt, performance.now() - t0);
  }
  t.dispose();
  return [
    {
      bench: "dispatch",
      shape: `${n} dispatches`,
      ms: ms / n,
      adapter: gpu.info.description,
      note: "ms per dispatch",
    },
    {
      bench: "roundtrip",
      shape: "submit+readback",
      ms: rt,
      adapter: gpu.info.description,
      note: "ms per wait",
    },
  ];
}

function table(rows: BenchResult[]): string {
  const head = ["bench", "shape", "variant", "ms", "GFLOP/s", "peer", "peer ms", "peer GFLOP/s", "note"];
  const fmt = (x: number | null | undefined, d = 2) => (x === undefined || x === null ? "" : x.toFixed(d));
  const body = rows.map((r) => [
    r.bench,
    r.shape,
    r.variant ?? "",
    fmt(r.ms, 3),
    fmt(r.gflops, 1),
    r.peer ?? "",
    fmt(r.peerMs, 3),
    fmt(r.peerGflops, 1),
    r.note ?? "",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ");
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...body.map(line)].join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      json: { type: "boolean", default: false },
      filter: { type: "string" },
      profile: { type: "boolean", default: false },
    },
  });
  const gpu = await requestGpu({ profile: values.profile });
  const benches: Record<string, (g: Gpu) => Promise<BenchResult[]>> = {
    matmul: (g) =>
      benchMatmul(
        g,
        matmulVariant(g.kernels, {
          m: 1,
          n: 1,
          k: 1,
          batch: 1,
          transA: false,
          transB: false,
          strideA: 0,
          strideB: 0,
        }),
      ),
    dispatch: benchDispatch,
    train_step: benchTrainStep,
  };
  const names = Object.keys(benches).filter((n) => !values.filter || n.includes(values.filter));
  if (names.length === 0) {
    console.error(
      `bench: no bench matches --filter ${values.filter}; have: ${Object.keys(benches).join(", ")}`,
    );
    Deno.exit(2);
  }
  if (!values.json) {
    console.log(
      `adapter: ${gpu.info.description} (backend ${gpu.info.backend}, fallback ${gpu.info.fallback})`,
    );
  }
  const all: BenchResult[] = [];
  for (const name of names) {
    const rows = await benches[name](gpu);
    for (const r of rows) if (values.json) console.log(JSON.stringify(r));
    all.push(...rows);
  }
  if (!values.json) console.log(table(all));
  if (values.profile) {
    const times = await gpu.takeProfile();
    const total = times.reduce((s, t) => s + t.ms, 0);
    console.log(`\nGPU time per kernel over the timed work (${total.toFixed(0)} ms in all):`);
    for (const t of times) {
      console.log(
        `  ${t.kernel.padEnd(28)} ${t.ms.toFixed(1).padStart(9)} ms ${
          (100 * t.ms / total).toFixed(1).padStart(5)
        }%  ${t.count} dispatches`,
      );
    }
  }
}
