import { equal, throws } from "node:assert/strict";
import { backward, savedActivationBytes } from "../../core/autograd.ts";
import { swiglu } from "../../core/ops/swiglu.ts";
import { fromArray } from "../../core/tensor.ts";
import { swigluRef } from "../reference/cpu.ts";
import { assertClose, checkOp, gpuTest, kernelVariants, numericGrad, randomArray, rng } from "../helpers.ts";

gpuTest("swiglu matches silu(gate)·up and its finite differences in every kernel family", async () => {
  // 37×53 elements are read one at a time; [130, 128] as vec4, through texture copies on software adapters.
  for (const [name, gpu] of await kernelVariants()) {
    for (const shape of [[37, 53], [4, 8], [130, 128]]) {
      await checkOp(gpu, {
        shapes: [shape, shape],
        run: ([g, u]) => swiglu(g, u),
        reference: ([g, u]) => swigluRef(g, u),
        inputs: [randomArray(rng(3), shape[0] * shape[1], -4, 4), randomArray(rng(4), shape[0] * shape[1])],
        maxDifferences: 100,
      }).catch((e) => {
        throw new Error(`${name}, [${shape}]: ${e.message}`);
      });
    }
  }
});

gpuTest("swiglu stays finite for large gates", async (gpu) => {
  const gate = Float64Array.from([-1e4, -100, -30, -10, 0, 10, 30, 100, 1e4]);
  await checkOp(gpu, {
    shapes: [[9], [9]],
    inputs: [gate, Float64Array.from(gate, (_, i) => 0.5 + i / 4)],
    run: ([g, u]) => swiglu(g, u),
    reference: ([g, u]) => swigluRef(g, u),
  });
});

for (const trained of ["gate", "up"] as const) {
  gpuTest(`swiglu's gradient reaches only ${trained}, the input that requires it`, async (gpu) => {
    const [rows, cols] = [37, 53];
    const n = rows * cols;
    const [g, u, w] = [randomArray(rng(5), n, -3, 3), randomArray(rng(6), n), randomArray(rng(7), n)];
    const gate = fromArray(gpu, g, [rows, cols], { requiresGrad: trained === "gate" });
    const up = fromArray(gpu, u, [rows, cols], { requiresGrad: trained === "up" });
    const y = swiglu(gate, up);
    // d(up) needs only gate; d(gate) needs both.
    equal(savedActivationBytes(), (trained === "gate" ? 2 : 1) * n * 4);
    const dy = fromArray(gpu, w, [rows, cols]);
    backward(y, dy);
    equal((trained === "gate" ? up : gate).grad, null);
    const at = Array.from({ length: 60 }, (_, j) => (j * 131) % n);
    const loss = (v: Float64Array) => {
      const out = trained === "gate" ? swigluRef(v, u) : swigluRef(g, v);
      return out.reduce((s, o, i) => s + w[i] * o, 0);
    };
    const full = await (trained === "gate" ? gate : up).grad!.download();
    assertClose(
      at.map((i) => full[i]),
      numericGrad(loss, Float64Array.from(trained === "gate" ? g : u), at),
      { rtol: 1e-3, atol: 1e-4, what: `d(${trained})` },
    );
    for (const t of [gate, up, y, dy]) t.dispose();
  });
}

gpuTest("swiglu refuses gate and up of different shapes, naming both", (gpu) => {
  const gate = fromArray(gpu, new Float32Array(6), [2, 3]);
  const up = fromArray(gpu, new Float32Array(6), [3, 2]);
  throws(() => swiglu(gate, up), /swiglu: shapes differ: .*\[2, 3\].*\[3, 2\]/);
  gate.dispose();
  up.dispose();
});

gpuTest("swiglu over more than 65,535 workgroups (a 2-D dispatch) covers every element", async (gpu) => {
  // An odd count is read one element per invocation: 65,535 × 64 + 7 invocations.
  const n = 65535 * 64 + 7;
  const [g, u, w] = [randomArray(rng(8), n, -4, 4), randomArray(rng(9), n), randomArray(rng(10), n)];
  const gate = fromArray(gpu, g, [n], { requiresGrad: true });
  const up = fromArray(gpu, u, [n], { requiresGrad: true });
  const y = swiglu(gate, up);
  const dy = fromArray(gpu, w, [n]);
  const out = await y.download();
  backward(y, dy);
  assertClose(out, swigluRef(g, u), { what: "swiglu forward" });
  // Elementwise, so each gradient is a one-element central difference of w·silu(g)·u.
  const h = 1e-5;
  const f = (gi: number, ui: number) => (gi / (1 + Math.exp(-gi))) * ui;
  const dgate = Float64Array.from(g, (gi, i) => (w[i] * (f(gi + h, u[i]) - f(gi - h, u[i]))) / (2 * h));
  const dup = Float64Array.from(g, (gi, i) => w[i] * f(gi, 1));
  assertClose(await gate.grad!.download(), dgate, { rtol: 1e-3, atol: 1e-4, what: "d(gate)" });
  assertClose(await up.grad!.download(), dup, { what: "d(up)" });
  for (const t of [gate, up, y, dy]) t.dispose();
});
