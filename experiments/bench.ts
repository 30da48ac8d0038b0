/**
 * `deno task bench [--json] [--filter NAME]`: kernel and runtime benchmarks with their peers,
 * measured in the same run. Prints a table, or one JSON object per line with --json.
 */
import { FlagError, parseFlags, runCli } from "./flags.ts";
import { type Gpu, requestGpu } from "../core/gpu.ts";
import { matmul } from "../core/ops/matmul.ts";
import { matmulVariant } from "../kernels/select.ts";
import { empty } from "../core/tensor.ts";
import { fillKernel } from "../kernels/elementwise.ts";
import { type StepConfig, torchAttentionMs, torchDevice, torchMatmulMs, torchTrainStepMs } from "./peers.ts";
import { attention } from "../core/ops/attention.ts";
import { isSoftwareAdapter } from "../kernels/select.ts";
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
  /** Our speed as a fraction of the peer's: peerMs / ms (1 = as fast; null without a peer). */
  ratio?: number | null;
  adapter: string;
  /** Kernel family run (gpu or software). */
  kernels: string;
  note?: string;
}

/** peerMs / ms, or null without a peer. */
const ratioOf = (ms: number, peerMs: number | null | undefined) => (peerMs ? peerMs / ms : null);

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

type Form = "A·B" | "A·Bᵀ" | "Aᵀ·B";

/** Matmul shapes of every run, and on a GPU those of GPT-2 124M at 4096 tokens (T 1024, B 4). */
function matmulShapes(onGpu: boolean): [number, number, number, Form, string][] {
  const small: [number, number, number, Form, string][] = [
    [512, 512, 512, "A·B", ""],
    [1024, 1024, 1024, "A·B", ""],
    [4096, 1024, 256, "A·B", ""],
    [4096, 256, 1024, "A·Bᵀ", ""],
    [256, 1024, 4096, "Aᵀ·B", ""],
  ];
  if (!onGpu) return small;
  return [
    ...small,
    [4096, 4096, 4096, "A·B", ""],
    [4096, 2304, 768, "A·B", "GPT-2 c_attn"],
    [4096, 3072, 768, "A·B", "GPT-2 c_fc"],
    [4096, 768, 3072, "A·B", "GPT-2 mlp c_proj"],
    [4096, 768, 3072, "A·Bᵀ", "GPT-2 c_fc dX"],
    [768, 3072, 4096, "Aᵀ·B", "GPT-2 c_fc dW"],
    [4096, 50257, 768, "A·Bᵀ", "GPT-2 LM head"],
    [4096, 8, 768, "A·B", "LoRA r8 A"],
    [8, 768, 4096, "Aᵀ·B", "LoRA r8 dB"],
  ];
}

/** Matmul M×K · K×N (and the transposed forms backward uses) with the device's kernels. */
async function benchMatmul(gpu: Gpu): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  const peer = await torchDevice();
  for (const [m, n, k, form, what] of matmulShapes(onGpu(gpu))) {
    const transA = form === "Aᵀ·B", transB = form === "A·Bᵀ";
    // The peer runs first: llvmpipe's worker threads can keep a core busy for a while after our work.
    const peerMs = await torchMatmulMs(m, n, k, transA, transB);
    const a = empty(gpu, transA ? [k, m] : [m, k], { name: "a" });
    const b = empty(gpu, transB ? [n, k] : [k, n], { name: "b" });
    a.fill(0.5);
    b.fill(0.25);
    const flops = 2 * m * n * k;
    const ms = await timeIt(gpu, () => matmul(a, b, { transA, transB }).dispose());
    out.push({
      bench: "matmul",
      shape: `${m}x${n}x${k}`,
      variant: `${matmulVariant(gpu.kernels)} ${form}${what ? ` (${what})` : ""}`,
      ms,
      gflops: flops / ms / 1e6,
      peer: peer ?? "pytorch (not installed)",
      peerMs,
      peerGflops: peerMs === null ? null : flops / peerMs / 1e6,
      ratio: ratioOf(ms, peerMs),
      adapter: gpu.info.description,
      kernels: gpu.kernels,
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

/** GPT-2 124M (12 layers, d 768, 12 heads, V 50257) at block `t` and batch `b`. */
function gpt2Small(t: number, b: number): StepConfig {
  return { nLayer: 12, nEmbd: 768, nHead: 12, vocabSize: 50257, blockSize: t, batchSize: b };
}

/** Whether the GPU-sized rows run: on a hardware adapter only (a software one would take hours). */
function onGpu(gpu: Gpu): boolean {
  return !isSoftwareAdapter(gpu.info.description, gpu.info.fallback);
}

/**
 * GPT-2 training steps (forward, backward, AdamW, one submit each; losses kept on the GPU and read
 * once at the end, as the trainer does) beside PyTorch eager fp32 on its best device: ms/step,
 * tokens/s, peak memory, dispatches per step, and the step's GFLOP/s.
 */
async function benchTrainStep(gpu: Gpu): Promise<BenchResult[]> {
  const configs = onGpu(gpu) ? [STEP_CONFIG, gpt2Small(256, 4), gpt2Small(1024, 4)] : [STEP_CONFIG];
  const out: BenchResult[] = [];
  for (const c of configs) out.push(await trainStepRow(gpu, c));
  return out;
}

async function trainStepRow(gpu: Gpu, c: StepConfig): Promise<BenchResult> {
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
  const losses = empty(gpu, [32], { name: "bench_losses" });
  let dispatches = 0;
  const step = async (slot: number) => {
    const loss = tidy(() => model.loss(input));
    backward(loss);
    opt.step(params, 1e-4, 1);
    for (const [, p] of params) p.zeroGrad();
    gpu.copy(loss.buffer, loss.byteOffset, losses.buffer, losses.byteOffset + (slot % 32) * 4, 4);
    loss.dispose();
    dispatches = gpu.pendingDispatches;
    await gpu.submit();
  };
  for (let i = 0; i < 2; i++) await step(i); // compiles every kernel
  await losses.download();
  if (gpu.profiling) await gpu.takeProfile();
  gpu.memory.resetPeak();
  let t0 = performance.now();
  await step(0);
  await losses.download();
  const steps = Math.max(3, Math.min(20, Math.round(3000 / (performance.now() - t0))));
  // Best of 3 windows, each `steps` steps with one readback at its end (the trainer's ms/step).
  let ms = Infinity;
  for (let w = 0; w < 3; w++) {
    t0 = performance.now();
    for (let i = 0; i < steps; i++) await step(i);
    const values = await losses.download();
    ms = Math.min(ms, (performance.now() - t0) / steps);
    if (!values.slice(0, Math.min(steps, 32)).every(Number.isFinite)) {
      throw new Error(`bench: a ${c.nLayer}-layer training step gave a non-finite loss`);
    }
  }
  const peak = gpu.memory.stats().peakTotal;
  // 6·N·tokens for the weights (tied head counted as the V×C matmul it is) + causal attention.
  const weights = model.parameterCount() - c.blockSize * c.nEmbd;
  const flops = 6 * weights * n + 6 * c.nLayer * c.batchSize * c.blockSize * c.blockSize * c.nEmbd;
  losses.dispose();
  opt.dispose();
  model.dispose();
  const sdpa = peer?.sdpaMs ? `SDPA ${peer.sdpaMs.toFixed(2)} ms` : "no SDPA before torch 2";
  const peerName = peer ? `pytorch ${peer.device} eager, manual attention (${sdpa})` : null;
  return {
    bench: "train_step",
    shape: `L${c.nLayer} d${c.nEmbd} h${c.nHead} T${c.blockSize} B${c.batchSize} V${c.vocabSize}`,
    variant: `${dispatches} dispatches, peak ${(peak / 2 ** 20).toFixed(0)} MiB, best of 3 × ${steps} steps`,
    ms,
    gflops: flops / ms / 1e6,
    peer: peerName ?? "pytorch (not installed)",
    peerMs: peer?.ms ?? null,
    peerGflops: peer ? flops / peer.ms / 1e6 : null,
    ratio: ratioOf(ms, peer?.ms),
    adapter: gpu.info.description,
    kernels: gpu.kernels,
    note: `${Math.round(n / (ms / 1000))} tok/s${peer ? `, ${(peer.ms / ms).toFixed(3)}× PyTorch` : ""}`,
  };
}

/** Causal attention alone, forward + backward: T 1024 and 2048 on a GPU (B 4, 12 heads of 64), T 128 elsewhere. */
async function benchAttention(gpu: Gpu): Promise<BenchResult[]> {
  const shapes: [number, number, number, number][] = onGpu(gpu)
    ? [[4, 12, 1024, 64], [4, 12, 2048, 64]]
    : [[8, 4, 128, 64]];
  const out: BenchResult[] = [];
  for (const [b, h, t, hd] of shapes) {
    const peer = await torchAttentionMs(b, h, t, hd);
    const c = h * hd;
    const qkv = empty(gpu, [b, t, 3 * c], { name: "qkv", requiresGrad: true });
    const g = empty(gpu, [b, t, c], { name: "g" });
    qkv.fill(0.01);
    g.fill(0.5);
    const ms = await timeIt(gpu, () => {
      const y = attention(qkv, h);
      backward(y, g);
      y.dispose();
      qkv.zeroGrad();
    }, 5);
    // Causal: half of the 4·B·H·T²·hd forward FLOPs; backward recomputes scores and runs 4 products.
    const flops = 0.5 * (4 + 10) * b * h * t * t * hd;
    out.push({
      bench: "attention",
      shape: `B${b} H${h} T${t} hd${hd}`,
      variant: "fused, forward + backward",
      ms,
      gflops: flops / ms / 1e6,
      peer: peer
        ? `pytorch manual (${
          peer.sdpa ? `SDPA ${peer.sdpa.toFixed(2)} ms, ${(peer.sdpa / ms).toFixed(3)}×` : "no SDPA"
        })`
        : "pytorch (not installed)",
      peerMs: peer?.manual ?? null,
      peerGflops: peer ? flops / peer.manual / 1e6 : null,
      ratio: ratioOf(ms, peer?.manual),
      adapter: gpu.info.description,
      kernels: gpu.kernels,
    });
    qkv.dispose();
    g.dispose();
  }
  return out;
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
      kernels: gpu.kernels,
      note: "ms per dispatch",
    },
    {
      bench: "roundtrip",
      shape: "submit+readback",
      ms: rt,
      adapter: gpu.info.description,
      kernels: gpu.kernels,
      note: "ms per wait",
    },
  ];
}

function table(rows: BenchResult[]): string {
  const head = [
    "bench",
    "shape",
    "variant",
    "ms",
    "GFLOP/s",
    "peer",
    "peer ms",
    "peer GFLOP/s",
    "ratio",
    "note",
  ];
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
    fmt(r.ratio, 3),
    r.note ?? "",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ");
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...body.map(line)].join("\n");
}

async function main(): Promise<void> {
  const values = parseFlags(Deno.args, {
    json: { type: "boolean" },
    filter: { type: "string" },
    profile: { type: "boolean" },
  });
  const gpu = await requestGpu({ profile: values.profile });
  const benches: Record<string, (g: Gpu) => Promise<BenchResult[]>> = {
    matmul: benchMatmul,
    dispatch: benchDispatch,
    attention: benchAttention,
    train_step: benchTrainStep,
  };

  const names = Object.keys(benches).filter((n) => !values.filter || n.includes(values.filter));
  if (names.length === 0) {
    throw new FlagError(
      `--filter ${values.filter}: matches no bench; have ${Object.keys(benches).join(", ")}`,
    );
  }
  if (!values.json) {
    console.log(
      `adapter: ${gpu.info.description} (backend ${gpu.info.backend}, fallback ${gpu.info.fallback}, ` +
        `${gpu.kernels} kernels, subgroup size ${gpu.info.subgroupSize || "none"})`,
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

if (import.meta.main) await runCli("bench", "deno task bench [--json] [--filter NAME] [--profile]", main);
