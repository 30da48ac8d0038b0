/** Test helpers: one shared device, seeded random data, closeness checks, finite differences. */
import { Gpu, requestGpu } from "../core/gpu.ts";
import { backward } from "../core/autograd.ts";
import type { KernelFamily } from "../kernels/select.ts";
import { childEnv, findTorch, runChild, type TorchPython } from "../experiments/child.ts";
import { fromArray, type Tensor } from "../core/tensor.ts";

const shared = new Map<string, Promise<Gpu>>();

/**
 * The device tests share: one per kernel family asked for (default: the family LISA_KERNELS or the
 * adapter gives), so a software adapter also checks the GPU kernels' numbers.
 */
export function testGpu(kernels?: KernelFamily): Promise<Gpu> {
  const key = kernels ?? "default";
  let gpu = shared.get(key);
  if (!gpu) {
    gpu = requestGpu({ kernels });
    shared.set(key, gpu);
  }
  return gpu;
}

/** Both kernel families, for tests that check every kernel against the same reference. */
export const KERNEL_FAMILIES: readonly KernelFamily[] = ["gpu", "software"];

/** Each kernel family, and the GPU family without subgroups where the adapter has them. */
export async function kernelVariants(): Promise<[string, Gpu][]> {
  const out: [string, Gpu][] = [];
  for (const family of KERNEL_FAMILIES) {
    const gpu = await testGpu(family);
    out.push([family, gpu]);
    if (family === "gpu" && gpu.info.subgroupSize > 0) {
      out.push(["gpu without subgroups", new Gpu(gpu.device, { ...gpu.info, subgroupSize: 0 })]);
    }
  }
  return out;
}

/** Deno.test for GPU work: the device's long-lived promises are not leaks. */
export function gpuTest(
  name: string,
  fn: (gpu: Gpu) => Promise<void> | void,
  options: { ignore?: boolean; kernels?: KernelFamily } = {},
): void {
  Deno.test({
    name,
    ignore: options.ignore,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => fn(await testGpu(options.kernels)),
  });
}

/** Seeded uniform generator in [0, 1) (mulberry32), so failures reproduce. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n values uniform in [lo, hi). */
export function randomArray(rand: () => number, n: number, lo = -1, hi = 1): Float64Array {
  return Float64Array.from({ length: n }, () => lo + (hi - lo) * rand());
}

/** Throws with the worst element when |a − b| > atol + rtol·|b| anywhere. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  { rtol = 1e-4, atol = 1e-5, what = "values" }: { rtol?: number; atol?: number; what?: string } = {},
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length} != expected ${expected.length}`);
  }
  let worst = -1, worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    const excess = err - (atol + rtol * Math.abs(expected[i]));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${what}: element ${worst} is ${actual[worst]}, expected ${
        expected[worst]
      } (rtol ${rtol}, atol ${atol})`,
    );
  }
}

/** Central differences of a scalar f64 function at x, at coordinates `at` (default: all). */
export function numericGrad(
  f: (x: Float64Array) => number,
  x: Float64Array,
  at: ArrayLike<number> = Array.from({ length: x.length }, (_, i) => i),
  h = 1e-5,
): Float64Array {
  const g = new Float64Array(at.length);
  for (let j = 0; j < at.length; j++) {
    const i = at[j];
    const keep = x[i];
    x[i] = keep + h;
    const fp = f(x);
    x[i] = keep - h;
    const fm = f(x);
    x[i] = keep;
    g[j] = (fp - fm) / (2 * h);
  }
  return g;
}

/** A leaf tensor holding `data` that requires grad. */
export function param(gpu: Gpu, data: ArrayLike<number>, shape: number[], name = "p"): Tensor {
  return fromArray(gpu, data, shape, { requiresGrad: true, name, category: "weights" });
}

/**
 * Checks an op against its CPU reference: forward values, then the gradient of Σ w·op(inputs) for
 * a random w against central differences of the f64 reference.
 */
export async function checkOp(
  gpu: Gpu,
  opts: {
    shapes: number[][];
    run: (xs: Tensor[]) => Tensor;
    reference: (xs: Float64Array[]) => Float64Array;
    seed?: number;
    inputs?: Float64Array[];
    rtol?: number;
    atol?: number;
    gradRtol?: number;
    gradAtol?: number;
    /** Most coordinates per input checked by finite differences (a seeded sample beyond it). */
    maxDifferences?: number;
  },
): Promise<void> {
  const rand = rng(opts.seed ?? 1);
  const xs = opts.inputs ?? opts.shapes.map((s) => randomArray(rand, s.reduce((p, d) => p * d, 1)));
  const ts = xs.map((x, i) => param(gpu, x, opts.shapes[i], `x${i}`));
  const out = opts.run(ts);
  const expected = opts.reference(xs);
  assertClose(await out.download(), expected, {
    rtol: opts.rtol ?? 1e-4,
    atol: opts.atol ?? 1e-5,
    what: "forward",
  });
  const w = randomArray(rand, out.size);
  const wt = fromArray(gpu, w, out.shape, { name: "w" });
  backward(out, wt);
  for (let i = 0; i < xs.length; i++) {
    const loss = (xi: Float64Array) => {
      const args = xs.map((x, j) => (j === i ? xi : x));
      const y = opts.reference(args);
      let s = 0;
      for (let j = 0; j < y.length; j++) s += w[j] * y[j];
      return s;
    };
    const all = Array.from({ length: xs[i].length }, (_, j) => j);
    const limit = opts.maxDifferences ?? 200;
    const at = all.length <= limit ? all : all.sort(() => rand() - 0.5).slice(0, limit);
    const num = numericGrad(loss, Float64Array.from(xs[i]), at);
    const full = await ts[i].grad!.download();
    const got = at.map((j) => full[j]);
    assertClose(got, num, {
      rtol: opts.gradRtol ?? 1e-3,
      atol: opts.gradAtol ?? 1e-4,
      what: `grad of input ${i}`,
    });
  }
  for (const t of [...ts, out, wt]) t.dispose();
}

/** The Python with PyTorch the reference checks use (python3 on PATH, then /usr/bin/python3), if any. */
export const torchPython: TorchPython = await findTorch();

/** Whether the PyTorch checks can run; when not, the reason is printed once. */
export const hasTorch: boolean = torchPython.python !== null;
if (torchPython.python === null) {
  console.warn(`PyTorch checks skipped: no Python with torch (${torchPython.reason})`);
}

/** Runs tests/reference/`script` with the PyTorch Python and returns its JSON stdout; throws its stderr. */
export async function runReference(script: string, args: string[]): Promise<unknown> {
  if (torchPython.python === null) throw new Error(`no Python with torch: ${torchPython.reason}`);
  const out = await runChild(torchPython.python, [`tests/reference/${script}`, ...args]);
  if ("error" in out) throw new Error(out.error);
  if (!out.ok) throw new Error(out.stderr);
  return JSON.parse(out.stdout);
}

/** A fresh folder under ./.cache (the one place tests may write). */
export async function cacheTempDir(prefix?: string): Promise<string> {
  await Deno.mkdir("./.cache", { recursive: true });
  return Deno.makeTempDir({ dir: "./.cache", prefix });
}

/**
 * The permission flags `deno task NAME` runs with (from deno.json), so tests start the CLIs exactly
 * as a user's task does.
 */
export async function taskFlags(name: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  const task: string | undefined = config.tasks?.[name];
  if (!task) throw new Error(`deno.json has no task ${name}`);
  return task.split(/\s+/).filter((a) => a.startsWith("--allow-"));
}

/** `deno run` of a CLI script with its task's permissions: the exit code and outputs. */
export async function runTask(
  task: string,
  script: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("deno", {
    args: ["run", ...await taskFlags(task), script, ...args],
    clearEnv: true,
    env: childEnv(),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}
