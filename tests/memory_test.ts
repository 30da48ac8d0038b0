import { deepEqual, equal, notEqual, ok, throws } from "node:assert/strict";
import { backward, noGrad, savedActivationBytes } from "../core/autograd.ts";
import { CATEGORIES, sizeClass } from "../core/memory.ts";
import { initParams, Linear } from "../core/nn/layers.ts";
import { gelu } from "../core/ops/gelu.ts";
import { matmul } from "../core/ops/matmul.ts";
import { sum } from "../core/ops/reduce.ts";
import { Rng } from "../core/random.ts";
import { empty, fromArray, tidy } from "../core/tensor.ts";
import { gpuTest, param, randomArray, rng } from "./helpers.ts";

gpuTest(
  "allocating and freeing tensors moves live bytes by exactly their sizes, per category",
  async (gpu) => {
    await gpu.submit();
    const before = gpu.memory.stats();
    const w = empty(gpu, [3, 5], { category: "weights" });
    const o = empty(gpu, [7], { category: "optimizer" });
    const a = empty(gpu, [1000], { category: "activations" });
    const s = gpu.memory.stats();
    equal(s.live.weights - before.live.weights, 60);
    equal(s.live.optimizer - before.live.optimizer, 28);
    equal(s.live.activations - before.live.activations, 4000);
    equal(s.live.grads - before.live.grads, 0);
    equal(s.liveTotal - before.liveTotal, 4088);
    // The pool rounds buffers up; that shows in `allocated`, never in `live`.
    equal(s.allocated - before.allocated, sizeClass(60) + sizeClass(28) + sizeClass(4000));
    w.dispose();
    o.dispose();
    a.dispose();
    const after = gpu.memory.stats();
    deepEqual(after.live, before.live);
    equal(after.reserved - before.reserved, sizeClass(60) + sizeClass(28) + sizeClass(4000));
  },
);

Deno.test("size classes are powers of two up to 1 MiB, then within an eighth, never below the request", () => {
  equal(sizeClass(4), 256);
  equal(sizeClass(1000), 1024);
  equal(sizeClass(1 << 20), 1 << 20);
  equal(sizeClass((1 << 20) + 1), (1 << 20) + (1 << 17));
  for (const n of [1, 255, 257, 5000]) ok(sizeClass(n) >= n && sizeClass(n) <= Math.max(256, 2 * n));
  for (const n of [(1 << 20) + 1, 3e6, 1e8 + 3]) ok(sizeClass(n) >= n && sizeClass(n) <= n * 1.125 + 4);
});

gpuTest("peaks record the high-water mark per category and reset on request", async (gpu) => {
  await gpu.submit();
  gpu.memory.resetPeak();
  const base = gpu.memory.stats();
  const a = empty(gpu, [256], { category: "workspace" });
  a.dispose();
  const b = empty(gpu, [64], { category: "workspace" });
  const s = gpu.memory.stats();
  equal(s.peak.workspace - base.live.workspace, 1024);
  equal(s.peakTotal - base.liveTotal, 1024);
  b.dispose();
  gpu.memory.resetPeak();
  equal(gpu.memory.stats().peak.workspace, base.live.workspace);
});

gpuTest("the timeline records allocations, frees, retags and marks", (gpu) => {
  gpu.memory.startTimeline();
  gpu.memory.mark("start");
  const t = empty(gpu, [10], { category: "activations", name: "tl" });
  t.retag("grads");
  t.dispose();
  const events = gpu.memory.stopTimeline().filter((e) => e.label === "tl" || e.event === "mark");
  deepEqual(events.map((e) => [e.event, e.category, e.bytes]), [
    ["mark", null, 0],
    ["alloc", "activations", 40],
    ["retag", "grads", 40],
    ["free", "grads", 40],
  ]);
});

gpuTest(
  "a frozen matmul keeps no copy of its input; a trainable one keeps exactly its input",
  async (gpu) => {
    // An activation that needs a gradient (a weight would not count as a saved activation).
    const x = fromArray(gpu, new Float32Array(4 * 8).fill(1), [4, 8], { requiresGrad: true, name: "x" });
    const frozen = fromArray(gpu, new Float32Array(8 * 3).fill(1), [8, 3], { category: "weights" });
    const trainable = param(gpu, new Float32Array(8 * 3).fill(1), [8, 3], "w");
    const y1 = matmul(x, frozen);
    equal(savedActivationBytes(), 0);
    backward(sum(y1));
    const input = fromArray(gpu, new Float32Array(4 * 8).fill(1), [4, 8], { name: "input" });
    const y2 = matmul(input, trainable);
    equal(savedActivationBytes(), input.bytes);
    backward(sum(y2));
    equal(savedActivationBytes(), 0);
    await gpu.submit();
    for (const t of [x, frozen, trainable, y1, y2, input]) t.dispose();
  },
);

for (const layout of ["in_out", "out_in"] as const) {
  gpuTest(
    `a frozen ${layout} Linear keeps no copy of its input and gets no gradient; a trainable one keeps exactly its input`,
    async (gpu) => {
      await gpu.submit();
      const grads0 = gpu.memory.stats().live.grads;
      const rand = rng(3);
      const make = initParams(gpu, new Rng(1));
      const frozen = new Linear(make, 8, 6, 0.5, "frozen", { bias: false, layout });
      frozen.weight.requiresGrad = false;
      const trainable = new Linear(make, 8, 6, 0.5, "trainable", { bias: false, layout });
      // An activation that needs a gradient (a weight would not count as a saved activation).
      const x = fromArray(gpu, randomArray(rand, 4 * 8), [4, 8], { requiresGrad: true, name: "x" });
      const y1 = frozen.forward(x);
      equal(savedActivationBytes(), 0);
      backward(sum(y1));
      const input = fromArray(gpu, randomArray(rand, 4 * 8), [4, 8], { name: "input" });
      const y2 = trainable.forward(input);
      equal(savedActivationBytes(), input.bytes);
      backward(sum(y2));
      await gpu.submit();
      equal(frozen.weight.grad, null);
      equal(gpu.memory.stats().live.grads - grads0, x.bytes + trainable.weight.bytes);
      for (const t of [x, y1, input, y2, frozen.weight, trainable.weight]) t.dispose();
    },
  );
}

gpuTest(
  "frozen weights get no gradient buffer and no graph is recorded without trainable inputs",
  async (gpu) => {
    await gpu.submit();
    const before = gpu.memory.stats().live.grads;
    const x = fromArray(gpu, new Float32Array(6).fill(1), [2, 3]);
    const w = fromArray(gpu, new Float32Array(12).fill(1), [3, 4], { category: "weights" });
    const y = matmul(x, w);
    equal(y.requiresGrad, false);
    equal(y.node, null);
    // Backward through w with a trainable input: only that input gets a gradient buffer.
    const xt = param(gpu, new Float32Array(6).fill(1), [2, 3], "xt");
    const yt = matmul(xt, w);
    backward(sum(yt));
    await gpu.submit();
    equal(w.grad, null);
    notEqual(xt.grad, null);
    equal(gpu.memory.stats().live.grads, before + xt.bytes);
    for (const t of [x, w, y, xt, yt]) t.dispose();
  },
);

gpuTest("repeated training steps do not grow live or reserved bytes", async (gpu) => {
  const rand = () => Math.sin(Math.random() * 1e4);
  const w1 = param(gpu, Float32Array.from({ length: 16 * 32 }, rand), [16, 32], "w1");
  const w2 = param(gpu, Float32Array.from({ length: 32 * 4 }, rand), [32, 4], "w2");
  const x = fromArray(gpu, Float32Array.from({ length: 8 * 16 }, rand), [8, 16]);
  const step = async () => {
    const loss = tidy(() => sum(matmul(gelu(matmul(x, w1)), w2)));
    backward(loss);
    loss.dispose();
    noGrad(() => {
      w1.zeroGrad();
      w2.zeroGrad();
    });
    await gpu.submit();
  };
  await step();
  await step();
  const s2 = gpu.memory.stats();
  for (let i = 0; i < 4; i++) await step();
  const s6 = gpu.memory.stats();
  for (const c of CATEGORIES) equal(s6.live[c], s2.live[c], `live ${c}`);
  equal(s6.allocated + s6.reserved, s2.allocated + s2.reserved);
  for (const t of [w1, w2, x]) t.dispose();
});

gpuTest("memory refuses a buffer beyond the device's maxBufferSize, naming it", (gpu) => {
  const max = gpu.info.limits.maxBufferSize;
  throws(
    () => gpu.memory.alloc(max + 4, "weights", "huge"),
    new RegExp(
      `huge \\(weights\\) needs .* \\(${
        max + 4
      } bytes\\), beyond this device's maxBufferSize of .* \\(${max} bytes\\)`,
    ),
  );
  throws(() => gpu.memory.alloc(0, "weights", "nothing"), /cannot allocate 0 bytes for nothing/);
});

gpuTest("row views share their tensor's buffer: no bytes counted, freed only after the view", async (gpu) => {
  await gpu.submit();
  const before = gpu.memory.stats().liveTotal;
  const t = fromArray(gpu, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [6, 2], { name: "rows_parent" });
  const v = t.rows(2, 4);
  deepEqual(v.shape, [2, 2]);
  equal(gpu.memory.stats().liveTotal - before, 48);
  deepEqual([...await v.download()], [4, 5, 6, 7]);
  t.dispose();
  equal(gpu.memory.stats().liveTotal - before, 48, "the view keeps the buffer alive");
  const flat = v.view([4]);
  deepEqual([...await flat.download()], [4, 5, 6, 7]);
  v.dispose();
  equal(gpu.memory.stats().liveTotal - before, 48, "a view of the view keeps it alive");
  flat.dispose();
  equal(gpu.memory.stats().liveTotal, before);
  const u = fromArray(gpu, new Float32Array(12), [12]);
  throws(
    () => u.rows(1, 2).binding("op"),
    /view .* starts at byte 4, not a multiple of this device's minStorageBufferOffsetAlignment/,
  );
  throws(() => u.rows(3, 13), /rows\(3, 13\) is not a range within \[0, 12\]/);
  throws(() => u.view([5]), /cannot be viewed as \[5\]/);
});
