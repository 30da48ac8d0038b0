import { globalNorm, l2Norm, mean, sum } from "../../core/ops/reduce.ts";
import { add } from "../../core/ops/elementwise.ts";
import { fromArray } from "../../core/tensor.ts";
import { assertClose, checkOp, gpuTest, kernelVariants, randomArray, rng } from "../helpers.ts";

const total = (x: Float64Array) => x.reduce((p, v) => p + v, 0);

gpuTest(
  "sum and mean match the reference, over more elements than the first stage has threads",
  async (gpu) => {
    for (const n of [1, 63, 3001, 4100, 20000]) {
      await checkOp(gpu, {
        shapes: [[n]],
        run: ([x]) => sum(x),
        reference: ([x]) => Float64Array.of(total(x)),
        rtol: 1e-5,
        atol: 1e-4,
      });
      await checkOp(gpu, {
        shapes: [[n]],
        run: ([x]) => mean(x),
        reference: ([x]) => Float64Array.of(total(x) / n),
      });
    }
  },
);

gpuTest("bias gradient sums over more rows than one column chunk (scalar and vec4 columns)", async (gpu) => {
  // [150, 128] is big enough for the texture-read path on software adapters.
  for (const c of [3, 8, 128]) {
    await checkOp(gpu, {
      shapes: [[150, c], [c]],
      run: ([a, b]) => add(a, b),
      reference: ([a, b]) => a.map((v, i) => v + b[i % c]),
    });
  }
});

gpuTest("l2Norm matches ‖x‖ and its gradient x/‖x‖", async (gpu) => {
  await checkOp(gpu, {
    shapes: [[5, 11]],
    run: ([x]) => l2Norm(x),
    reference: ([x]) => Float64Array.of(Math.sqrt(total(x.map((v) => v * v)))),
  });
});

gpuTest("globalNorm is the norm of all tensors together", async (gpu) => {
  const rand = rng(3);
  const xs = [randomArray(rand, 7), randomArray(rand, 1300), randomArray(rand, 1), randomArray(rand, 20000)];
  const ts = xs.map((x, i) => fromArray(gpu, x, [x.length], { name: `g${i}` }));
  const n = globalNorm(gpu, ts);
  const expected = Math.sqrt(xs.reduce((p, x) => p + total(x.map((v) => v * v)), 0));
  assertClose(await n.download(), [expected], { what: "global norm" });
  for (const t of [...ts, n]) t.dispose();
});

gpuTest(
  "sums of 280,000 and 210,003 elements (passes of partials) match the reference in every kernel family",
  async () => {
    for (const [name, gpu] of await kernelVariants()) {
      for (const n of [70000 * 4, 70001 * 3, 4100]) {
        await checkOp(gpu, {
          shapes: [[n]],
          run: ([x]) => sum(x),
          reference: ([x]) => Float64Array.of(total(x)),
          rtol: 1e-5,
          atol: 2e-3,
          maxDifferences: 10,
        }).catch((e) => {
          throw new Error(`${name}, sum of ${n}: ${e.message}`);
        });
      }
    }
  },
);

gpuTest(
  "column sums over 70,000 rows (bias gradient) match the reference in every kernel family",
  async () => {
    for (const [name, gpu] of await kernelVariants()) {
      for (const c of [3, 8]) {
        await checkOp(gpu, {
          shapes: [[70000, c], [c]],
          run: ([a, b]) => add(a, b),
          reference: ([a, b]) => a.map((v, i) => v + b[i % c]),
          maxDifferences: 20,
        }).catch((e) => {
          throw new Error(`${name}, [70000, ${c}]: ${e.message}`);
        });
      }
    }
  },
);

gpuTest("l2Norm and globalNorm match the reference in every kernel family", async () => {
  for (const [name, gpu] of await kernelVariants()) {
    await checkOp(gpu, {
      shapes: [[300, 11]],
      run: ([x]) => l2Norm(x),
      reference: ([x]) => Float64Array.of(Math.sqrt(total(x.map((v) => v * v)))),
    }).catch((e) => {
      throw new Error(`${name}, l2Norm: ${e.message}`);
    });
    const rand = rng(4);
    const xs = Array.from({ length: 12 }, (_, i) => randomArray(rand, 1 + 3001 * i));
    const ts = xs.map((x, i) => fromArray(gpu, x, [x.length], { name: `g${i}` }));
    const n = globalNorm(gpu, ts);
    const expected = Math.sqrt(xs.reduce((p, x) => p + total(x.map((v) => v * v)), 0));
    assertClose(await n.download(), [expected], { what: `${name}: global norm of 12 tensors` });
    for (const t of [...ts, n]) t.dispose();
  }
});
