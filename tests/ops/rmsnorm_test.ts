import { deepEqual, equal, throws } from "node:assert/strict";
import { backward, noGrad, savedActivationBytes } from "../../core/autograd.ts";
import type { Gpu } from "../../core/gpu.ts";
import { initParams, RMSNorm } from "../../core/nn/layers.ts";
import { rmsNorm } from "../../core/ops/rmsnorm.ts";
import { Rng } from "../../core/random.ts";
import { fromArray } from "../../core/tensor.ts";
import { rmsNormRef } from "../reference/cpu.ts";
import { assertClose, checkOp, gpuTest, kernelVariants, numericGrad, randomArray, rng } from "../helpers.ts";

const GRAD_TOLERANCES = { gradRtol: 2e-3, gradAtol: 5e-4 };

gpuTest("rmsNorm matches the reference and finite differences for x and weight", async (gpu) => {
  // [260, 64] is read through texture copies on software adapters; [4099, 6] is big enough too, but
  // its rows are not vec4 units, and its dw sums 65 chunks of rows.
  for (const [rows, c] of [[3, 7], [131, 5], [70, 8], [260, 64], [4099, 6]]) {
    await checkOp(gpu, {
      shapes: [[rows, c], [c]],
      run: ([x, w]) => rmsNorm(x, w, 1e-5),
      reference: ([x, w]) => rmsNormRef(x, w, c, 1e-5),
      ...GRAD_TOLERANCES,
    }).catch((e) => {
      throw new Error(`[${rows}, ${c}]: ${e.message}`);
    });
  }
});

// 21847 and 32771 floats: LayerNorm's plan (three passes) takes a workgroup per row even in the
// software family; at 32771 two passes alone would pass 65,535 loop iterations. 65537 rows pass the
// 65,535 workgroups one dispatch dimension holds.
const LONG_AND_ODD = [
  [5, 1601],
  [6, 768],
  [3, 4096],
  [4099, 37],
  [2, 5000],
  [2, 21847],
  [2, 32771],
  [65537, 4],
];

gpuTest(
  "rmsNorm over LLaMA widths (4096) and odd ones matches the reference in every kernel family",
  async () => {
    for (const [name, gpu] of await kernelVariants()) {
      for (const [rows, c] of LONG_AND_ODD) {
        await checkOp(gpu, {
          shapes: [[rows, c], [c]],
          run: ([x, w]) => rmsNorm(x, w, 1e-6),
          reference: ([x, w]) => rmsNormRef(x, w, c, 1e-6),
          ...GRAD_TOLERANCES,
          maxDifferences: 40,
        }).catch((e) => {
          throw new Error(`${name}, [${rows}, ${c}]: ${e.message}`);
        });
      }
    }
  },
);

gpuTest("rmsNorm adds eps to the mean square: rows whose mean square is near eps", async () => {
  for (const [name, gpu] of await kernelVariants()) {
    for (const [rows, c, eps] of [[9, 37, 1e-6], [4, 1024, 1e-5], [3, 5000, 1e-6]]) {
      const rand = rng(rows);
      // |x| < 2e-3: mean(x²) ≈ 1.3e-6, so eps moves y by tens of percent.
      const inputs = [randomArray(rand, rows * c, -2e-3, 2e-3), randomArray(rand, c)];
      await checkOp(gpu, {
        shapes: [[rows, c], [c]],
        inputs,
        run: ([x, w]) => rmsNorm(x, w, eps),
        reference: ([x, w]) => rmsNormRef(x, w, c, eps),
        ...GRAD_TOLERANCES,
        maxDifferences: 40,
      }).catch((e) => {
        throw new Error(`${name}, [${rows}, ${c}], eps ${eps}: ${e.message}`);
      });
    }
  }
});

/**
 * Σ v·rmsNorm(x, w) backpropagated with only x or only w trainable (x an activation): checks the
 * trainable one's gradient against finite differences and returns what the tape kept.
 */
async function oneTrainable(
  gpu: Gpu,
  rows: number,
  c: number,
  trainable: "x" | "weight",
): Promise<
  {
    saved: number;
    weightSaved: boolean;
    xGrad: boolean;
    weightGrad: boolean;
    gradBytes: number;
    backwardAllocates: string[];
  }
> {
  const rand = rng(rows * c);
  const [xs, ws, v] = [randomArray(rand, rows * c), randomArray(rand, c), randomArray(rand, rows * c)];
  const x = fromArray(gpu, xs, [rows, c], { requiresGrad: trainable === "x", name: "x" });
  const w = fromArray(gpu, ws, [c], { requiresGrad: trainable === "weight", category: "weights", name: "w" });
  const vt = fromArray(gpu, v, [rows, c], { name: "v" });
  const [savedBefore, gradsBefore] = [savedActivationBytes(), gpu.memory.stats().live.grads];
  const y = rmsNorm(x, w, 1e-5);
  const saved = savedActivationBytes() - savedBefore;
  const weightSaved = y.node!.saved.includes(w);
  gpu.memory.startTimeline();
  backward(y, vt);
  const allocated = gpu.memory.stopTimeline().filter((e) => e.event === "alloc").map((e) => e.label);
  const gradBytes = gpu.memory.stats().live.grads - gradsBefore;
  const loss = (xa: Float64Array, wa: Float64Array) => {
    const out = rmsNormRef(xa, wa, c, 1e-5);
    let s = 0;
    for (let i = 0; i < out.length; i++) s += v[i] * out[i];
    return s;
  };
  const [t, numeric] = trainable === "x"
    ? [x, numericGrad((xa) => loss(xa, ws), Float64Array.from(xs))]
    : [w, numericGrad((wa) => loss(xs, wa), Float64Array.from(ws))];
  assertClose(await t.grad!.download(), numeric, { rtol: 2e-3, atol: 5e-4, what: `grad of ${trainable}` });
  const result = {
    saved,
    weightSaved,
    xGrad: x.grad !== null,
    weightGrad: w.grad !== null,
    gradBytes,
    backwardAllocates: [...new Set(allocated)].sort(),
  };
  for (const u of [x.grad, w.grad, x, w, vt, y]) u?.dispose();
  return result;
}

gpuTest("a frozen weight gets no gradient; a frozen input's rmsNorm keeps no weight", async () => {
  for (const [name, gpu] of await kernelVariants()) {
    for (const [rows, c] of [[7, 37], [70, 8]]) {
      const xBytes = rows * c * 4;
      const rstdBytes = rows * 4;
      // dx needs x, the weight and 1/rms; backward computes no dw and allocates no buffer for it.
      deepEqual(await oneTrainable(gpu, rows, c, "x"), {
        saved: xBytes + rstdBytes,
        weightSaved: true,
        xGrad: true,
        weightGrad: false,
        gradBytes: xBytes,
        backwardAllocates: ["drmsnorm"],
      }, `${name}, [${rows}, ${c}], frozen weight`);
      // dw needs x and 1/rms only.
      deepEqual(await oneTrainable(gpu, rows, c, "weight"), {
        saved: xBytes + rstdBytes,
        weightSaved: false,
        xGrad: false,
        weightGrad: true,
        gradBytes: c * 4,
        // Over 64 rows, dw sums per-chunk partials.
        backwardAllocates: rows > 64 ? ["dweight", "rms_dweight_partials"] : ["dweight"],
      }, `${name}, [${rows}, ${c}], frozen input`);
    }
  }
});

gpuTest("rmsNorm records nothing when neither input needs a gradient", async (gpu) => {
  const before = savedActivationBytes();
  const x = fromArray(gpu, randomArray(rng(3), 12), [3, 4]);
  const w = fromArray(gpu, new Float32Array(4).fill(1), [4], { category: "weights" });
  const y = rmsNorm(x, w, 1e-6);
  equal(y.requiresGrad, false);
  equal(y.node, null);
  equal(savedActivationBytes(), before);
  await y.download();
  for (const t of [x, w, y]) t.dispose();
});

gpuTest("rmsNorm refuses a weight of the wrong size and a bad eps", (gpu) => {
  const x = fromArray(gpu, new Float32Array(6), [2, 3]);
  const w = fromArray(gpu, new Float32Array(2), [2]);
  throws(() => rmsNorm(x, w, 1e-6), /weight \[2\] must have 3 elements, the last dimension of x \[2, 3\]/);
  const w3 = fromArray(gpu, new Float32Array(3), [3]);
  throws(() => rmsNorm(x, w3, -1e-6), /eps must be a finite number ≥ 0, got -0.000001/);
  throws(() => rmsNorm(x, w3, NaN), /eps must be a finite number ≥ 0, got NaN/);
  for (const t of [x, w, w3]) t.dispose();
});

gpuTest("RMSNorm starts with weight 1 under its checkpoint name and normalizes by the RMS", async (gpu) => {
  const [rows, c] = [5, 12];
  const norm = new RMSNorm(initParams(gpu, new Rng(0)), c, 1e-6, "model.norm");
  deepEqual(norm.namedParameters().map(([n, t]) => [n, t.name, t.shape, t.requiresGrad]), [
    ["weight", "model.norm.weight", [c], true],
  ]);
  deepEqual(Array.from(await norm.weight.download()), new Array(c).fill(1));
  const xs = randomArray(rng(5), rows * c, -3, 3);
  const x = fromArray(gpu, xs, [rows, c]);
  const y = noGrad(() => norm.forward(x));
  assertClose(await y.download(), rmsNormRef(xs, new Float64Array(c).fill(1), c, 1e-6), { what: "forward" });
  for (const t of [x, y, norm.weight]) t.dispose();
});
