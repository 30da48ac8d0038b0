/**
 * `deno task bench:long [--steps N] [--methods full,lora,lisa] [--json]`: a leak check, not a timed
 * test. Trains a fresh `tiny` model for N steps (default 2,000) per method on a synthetic byte
 * stream (not the Brown corpus: loading it leaves ~60 MB of garbage that V8 collects when it likes,
 * which would hide a heap leak in the first method) with the loop every run uses
 * (core/finetune/trainer.ts: a loss read every 10 steps; here an evaluation before the first step
 * and every 500). After each read window it samples live GPU bytes, reserved GPU bytes (everything
 * the pool holds: live buffers plus pooled free ones, PyTorch's "reserved") and the JS heap; the
 * first sample comes after warm-up (kernels compiled, optimizer state allocated). Each must end
 * where it started: end ≤ start × (1 + 1%), plus 8 MiB for the heap. The heap is a sawtooth whose
 * collections are not ours to time (no `gc()` without V8 flags), so its start and end are floors:
 * the lowest sample over the first and over the last tenth of the windows; a leak raises the floor.
 * Prints a table (and with `--json` one JSON line per method); exits 1 when anything grew.
 *
 * The methods: full; LoRA r = 8 on all linear layers with dropout 0.05 (so each step draws and
 * uploads a mask); LISA γ = 1 with K = 2 and policy `reset`, so optimizer state is released and
 * re-allocated every other step.
 */
import { evalWindows, StreamBatcher } from "../core/data/batches.ts";
import { makeMethod, type MethodName, METHODS, type MethodSettings } from "../core/finetune/methods.ts";
import { train } from "../core/finetune/trainer.ts";
import { type Gpu, requestGpu } from "../core/gpu.ts";
import { GPT } from "../core/nn/gpt.ts";
import { AdamW } from "../core/optim/adamw.ts";
import { makeSchedule } from "../core/optim/schedule.ts";
import { Rng } from "../core/random.ts";
import { flagChoice, flagNumber, parseFlags, runCli } from "./flags.ts";
import { preset } from "./presets.ts";
import { formatDuration, Progress } from "./progress.ts";

/** Relative growth from the first sample to the last that still counts as flat. */
export const TOLERANCE = 0.01;
/** Bytes the heap may grow beyond {@link TOLERANCE}: V8 collects when it likes. */
export const HEAP_SLACK = 8 * 2 ** 20;

/** Each method's settings in this bench. */
const SETTINGS: Record<MethodName, Omit<MethodSettings, "seed">> = {
  full: { method: "full" },
  lora: { method: "lora", rank: 8, targets: "all-linear", dropout: 0.05 },
  lisa: { method: "lisa", gamma: 1, period: 2, state: "reset" },
};

/** A quantity at the start of the run, at its end, and its largest sample, in bytes. */
export interface Track {
  /** At the first sample (bytes). */
  start: number;
  /** At the last sample (bytes). */
  end: number;
  /** Largest sample (bytes). */
  max: number;
}

/** One method's long run. */
export interface LongRun {
  /** Which method trained. */
  method: MethodName;
  /** Steps run. */
  steps: number;
  /** Live GPU bytes (framework accounting). */
  live: Track;
  /** Bytes of GPU buffers the pool holds, live or free. */
  reserved: Track;
  /** `Deno.memoryUsage().heapUsed`; start and end are floors (see the module doc). */
  heap: Track;
  /** Whether none of the three grew (see {@link isFlat}). */
  flat: boolean;
  /** Wall-clock seconds of the run, compiles and evaluations included. */
  seconds: number;
}

/** True when `t` ended no higher than it started, within {@link TOLERANCE} and `slack` bytes. */
export function isFlat(t: Track, slack = 0): boolean {
  return t.end <= t.start * (1 + TOLERANCE) + slack;
}

/** First and last of `samples` (or, with `floors`, the lowest of the first and last tenth) and the max. */
export function summarize(samples: readonly number[], floors = false): Track {
  const k = floors ? Math.max(1, Math.floor(samples.length / 10)) : 1;
  return {
    start: Math.min(...samples.slice(0, k)),
    end: Math.min(...samples.slice(-k)),
    max: Math.max(...samples),
  };
}

/**
 * `length` byte tokens with something to learn: each is 5·previous + 3 (mod 256), replaced by a random
 * byte one time in ten.
 */
export function syntheticStream(length: number, seed: number): Uint32Array {
  const rng = new Rng(seed);
  const out = new Uint32Array(length);
  for (let i = 1; i < length; i++) out[i] = rng.next() < 0.1 ? rng.int(256) : (5 * out[i - 1] + 3) % 256;
  return out;
}

/** Trains `method` for `steps` steps on `tokens` and tracks memory after every read window. */
export async function longRun(
  gpu: Gpu,
  method: MethodName,
  steps: number,
  tokens: Uint32Array,
): Promise<LongRun> {
  const p = preset("tiny");
  const seed = 0;
  const t0 = performance.now();
  const model = new GPT(gpu, p.model, { seed });
  const optimizer = new AdamW(gpu, { weightDecay: 0 });
  try {
    const m = makeMethod(model, { ...SETTINGS[method], seed });
    const batcher = new StreamBatcher(tokens, p.batchSize, p.blockSize, seed + 1);
    // Evaluations are here only so a leak in them shows: two batches do.
    const evalTokens = tokens.subarray(0, 2 * p.batchSize * (p.blockSize + 1));
    const evalBatches = evalWindows(evalTokens, p.blockSize, p.batchSize);
    const live: number[] = [], reserved: number[] = [], heap: number[] = [];
    const progress = new Progress(`bench:long ${method}`, steps);
    await train({
      model,
      method: m,
      optimizer,
      nextBatch: () => batcher.next(),
      schedule: makeSchedule({ kind: "constant", lr: 1e-3, warmup: Math.min(10, steps - 1) }),
      steps,
      maxGradNorm: 1,
      evalEvery: 500,
      evalBatches,
      evalAtStart: true,
      onStep: (r) => progress.step(r, p.batchSize * p.blockSize),
      afterStep: () => {
        const s = gpu.memory.stats();
        live.push(s.liveTotal);
        reserved.push(s.allocated + s.reserved);
        heap.push(Deno.memoryUsage().heapUsed);
        return Promise.resolve();
      },
    });
    const r = { live: summarize(live), reserved: summarize(reserved), heap: summarize(heap, true) };
    const flat = isFlat(r.live) && isFlat(r.reserved) && isFlat(r.heap, HEAP_SLACK);
    return { method, steps, ...r, flat, seconds: (performance.now() - t0) / 1000 };
  } finally {
    optimizer.dispose();
    model.dispose();
  }
}

const MiB = 2 ** 20;

/** The table row of `r`: each quantity as start → end (max), in MiB. */
function row(r: LongRun): string {
  const f = (t: Track, digits: number) =>
    `${(t.start / MiB).toFixed(digits)} → ${(t.end / MiB).toFixed(digits)} (${
      (t.max / MiB).toFixed(digits)
    })`;
  return `| ${r.method} | ${r.steps} | ${f(r.live, 3)} | ${f(r.reserved, 3)} | ${f(r.heap, 1)} | ${
    r.flat ? "yes" : "NO"
  } | ${formatDuration(r.seconds)} |`;
}

const USAGE = "deno task bench:long [--steps N] [--methods full,lora,lisa] [--json]";

if (import.meta.main) {
  await runCli("bench:long", USAGE, async () => {
    const v = parseFlags(Deno.args, {
      steps: { type: "string", default: "2000" },
      methods: { type: "string", default: METHODS.join(",") },
      json: { type: "boolean" },
    });
    const steps = flagNumber("steps", v.steps, "positive integer");
    const methods = v.methods.split(",").map((m) => flagChoice("methods", m.trim(), METHODS));
    const gpu = await requestGpu();
    const tokens = syntheticStream(1 << 18, 0);
    console.error(`bench:long: tiny preset, ${steps} steps per method, adapter ${gpu.info.description}`);
    const runs: LongRun[] = [];
    for (const m of methods) runs.push(await longRun(gpu, m, steps, tokens));
    console.log(
      `\nMemory after the first read window → after the last (max over the run), MiB; heap: floors of the ` +
        `first and last tenth; flat: end ≤ start × ${1 + TOLERANCE} (heap + ${HEAP_SLACK / MiB} MiB)\n`,
    );
    console.log("| method | steps | live GPU | reserved GPU | JS heap | flat | wall |");
    console.log("| --- | --- | --- | --- | --- | --- | --- |");
    for (const r of runs) console.log(row(r));
    if (v.json) {
      for (const r of runs) {
        const { method, steps, live, reserved, heap, flat, seconds } = r;
        console.log(JSON.stringify({ method, steps, live, reserved, heap, flat, seconds }));
      }
    }
    const grew = runs.filter((r) => !r.flat).map((r) => r.method);
    if (grew.length) throw new Error(`memory grew over the run: ${grew.join(", ")}`);
  });
}
