import { deepEqual, equal, throws } from "node:assert/strict";
import { backward, noGrad } from "../core/autograd.ts";
import { add, mul, scale } from "../core/ops/elementwise.ts";
import { sum } from "../core/ops/reduce.ts";
import { gelu } from "../core/ops/gelu.ts";
import { fromArray, tidy } from "../core/tensor.ts";
import { gpuTest, param } from "./helpers.ts";

gpuTest("gradients accumulate over backward calls until released", async (gpu) => {
  const x = param(gpu, [1, 2, 3], [3], "x");
  backward(sum(scale(x, 2)));
  backward(sum(scale(x, 3)));
  deepEqual([...await x.grad!.download()], [5, 5, 5]);
  x.zeroGrad();
  equal(x.grad, null);
  backward(sum(mul(x, x)));
  deepEqual([...await x.grad!.download()], [2, 4, 6]);
  x.dispose();
});

gpuTest(
  "a tensor used twice gets both gradients; leaves sharing one gradient stay independent",
  async (gpu) => {
    const a = param(gpu, [1, 2], [2], "a");
    const b = param(gpu, [3, 4], [2], "b");
    backward(sum(add(a, a)));
    deepEqual([...await a.grad!.download()], [2, 2]);
    a.zeroGrad();
    // add's backward hands the same gradient to both inputs; accumulating into one must not touch the other.
    backward(sum(add(a, b)));
    backward(sum(scale(a, 10)));
    deepEqual([...await a.grad!.download()], [11, 11]);
    deepEqual([...await b.grad!.download()], [1, 1]);
    a.dispose();
    b.dispose();
  },
);

gpuTest("gradients of big tensors accumulate correctly (texture-read accumulation)", async (gpu) => {
  const n = 130 * 128;
  const x = param(gpu, Float32Array.from({ length: n }, (_, i) => i / n), [130, 128], "big");
  backward(sum(add(x, scale(x, 2))));
  backward(sum(scale(x, 0.5)));
  const g = await x.grad!.download();
  equal(g.every((v) => v === 3.5), true);
  x.dispose();
});

gpuTest("backward consumes the graph; a second call says so", (gpu) => {
  const x = param(gpu, [1], [1], "x");
  const loss = sum(gelu(x));
  backward(loss);
  throws(() => backward(loss), /has no graph: it is a leaf or an earlier backward\(\) freed its graph/);
  const v = param(gpu, [1, 2], [2], "v");
  throws(() => backward(scale(v, 2)), /has 2 elements; pass its gradient or reduce it to a scalar/);
  const c = fromArray(gpu, [1], [1]);
  throws(() => backward(c), /does not require grad/);
});

gpuTest("noGrad records nothing", (gpu) => {
  const x = param(gpu, [1, 2], [2], "x");
  const y = noGrad(() => scale(x, 2));
  equal(y.requiresGrad, false);
  equal(y.node, null);
  x.dispose();
  y.dispose();
});

gpuTest("tidy frees intermediates; backward then frees what the tape saved", async (gpu) => {
  const x = param(gpu, [0.5, -1, 2], [3], "x");
  await gpu.submit();
  const base = gpu.memory.stats().live.activations;
  const loss = tidy(() => sum(gelu(gelu(x))));
  // The first gelu's output is saved for the second's backward: alive after tidy.
  equal(gpu.memory.stats().live.activations - base, loss.bytes + 3 * 4);
  backward(loss);
  equal(gpu.memory.stats().live.activations - base, loss.bytes);
  loss.dispose();
  equal(gpu.memory.stats().live.activations, base);
  x.dispose();
});
