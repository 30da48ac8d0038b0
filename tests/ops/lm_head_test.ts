import { equal, throws } from "node:assert/strict";
import { backward } from "../../core/autograd.ts";
import { lmHeadChunkRows, lmHeadLoss } from "../../core/ops/lm_head.ts";
import { fromArray, type Tensor } from "../../core/tensor.ts";
import type { Gpu } from "../../core/gpu.ts";
import { crossEntropyRef, matmulRef } from "../reference/cpu.ts";
import {
  assertClose,
  checkOp,
  gpuTest,
  KERNEL_FAMILIES,
  param,
  randomArray,
  rng,
  testGpu,
} from "../helpers.ts";

const [ROWS, C, V] = [150, 8, 37];
const rand = rng(11);
const targets = Array.from({ length: ROWS }, () => Math.floor(rand() * V));
const mask = Array.from({ length: ROWS }, (_, i) => (i % 7 === 3 ? 0 : 1));

for (const chunkRows of [64, undefined]) {
  gpuTest(
    `LM head loss ${
      chunkRows ? "in chunks of 64 rows" : "in one piece"
    } matches the reference and finite differences`,
    async (gpu) => {
      const t = fromArray(gpu, targets, [ROWS], { dtype: "u32" });
      const m = fromArray(gpu, mask, [ROWS]);
      await checkOp(gpu, {
        shapes: [[2, 75, C], [V, C]],
        run: ([x, wte]) => lmHeadLoss(x, wte, t, m, { chunkRows }),
        reference: ([x, wte]) =>
          Float64Array.of(crossEntropyRef(matmulRef(x, wte, ROWS, V, C, false, true), targets, mask, V)),
        maxDifferences: 60,
      });
      t.dispose();
      m.dispose();
    },
  );
}

/** Loss, dx and dwte of the LM head in chunks of 64 rows (runs[0]) and in one piece (runs[1]). */
async function chunkedAndWhole(
  gpu: Gpu,
  x0: Float64Array,
  w0: Float64Array,
  t: Tensor,
  m: Tensor,
  rows: number,
  v: number,
): Promise<{ value: Float32Array; dx: Float32Array; dw: Float32Array }[]> {
  const runs = [];
  for (const chunkRows of [64, rows]) {
    const x = param(gpu, x0, [rows, C], "x");
    const w = param(gpu, w0, [v, C], "wte");
    const loss = lmHeadLoss(x, w, t, m, { chunkRows });
    const value = await loss.download();
    backward(loss);
    runs.push({ value, dx: await x.grad!.download(), dw: await w.grad!.download() });
    for (const p of [x, w, loss]) p.dispose();
  }
  return runs;
}

gpuTest(
  "chunked and whole LM head give the same loss and gradients (scalar and vec4 vocabularies)",
  async (gpu) => {
    for (const v of [V, 40]) {
      const r = rng(5);
      const x0 = randomArray(r, ROWS * C, -2, 2), w0 = randomArray(r, v * C);
      const t = fromArray(gpu, targets, [ROWS], { dtype: "u32" });
      const m = fromArray(gpu, mask, [ROWS]);
      const runs = await chunkedAndWhole(gpu, x0, w0, t, m, ROWS, v);
      assertClose(runs[0].value, runs[1].value, { what: `loss, V ${v}` });
      assertClose(runs[0].dx, runs[1].dx, { what: `dx, V ${v}`, atol: 1e-6 });
      assertClose(runs[0].dw, runs[1].dw, { what: `dwte, V ${v}`, atol: 1e-6 });
      t.dispose();
      m.dispose();
    }
  },
);

Deno.test("chunk rows keep a chunk's logits within the binding limit", () => {
  const limit = 128 * 2 ** 20;
  const rows = lmHeadChunkRows(50257, limit);
  equal(rows % 64, 0);
  equal(rows * 50257 * 4 <= limit, true);
  equal((rows + 64) * 50257 * 4 > limit, true);
  throws(() => lmHeadChunkRows(1e6, 1e6), /fewer than 64 rows/);
});

gpuTest("both LM head paths refuse targets and masks of the wrong type or size", (gpu) => {
  const x = fromArray(gpu, new Float32Array(ROWS * C), [ROWS, C]);
  const w = fromArray(gpu, new Float32Array(V * C), [V, C]);
  const t = fromArray(gpu, targets, [ROWS], { dtype: "u32" });
  const m = fromArray(gpu, mask, [ROWS]);
  const short = fromArray(gpu, mask.slice(1), [ROWS - 1]);
  const u32Mask = fromArray(gpu, mask, [ROWS], { dtype: "u32" });
  for (const chunkRows of [64, undefined]) {
    throws(() => lmHeadLoss(x, w, m, m, { chunkRows }), /lmHeadLoss: targets .* must be u32 token ids/);
    throws(() => lmHeadLoss(x, w, t, u32Mask, { chunkRows }), /lmHeadLoss: .* must be f32, got u32/);
    throws(
      () => lmHeadLoss(x, w, t, short, { chunkRows }),
      /lmHeadLoss: x \[150, 8\] has 150 rows but targets \[150\] and mask \[149\] must have one entry per row/,
    );
  }
  for (const a of [x, w, t, m, short, u32Mask]) a.dispose();
});

for (const family of KERNEL_FAMILIES) {
  gpuTest(`chunked and whole LM head agree over GPT-2's vocabulary (${family} kernels)`, async () => {
    const gpu = await testGpu(family);
    const [rows, v] = [80, 50257];
    const [tg, mk] = [targets.slice(0, rows), mask.slice(0, rows)];
    const r = rng(9);
    const x0 = randomArray(r, rows * C, -2, 2), w0 = randomArray(r, v * C);
    const t = fromArray(gpu, tg, [rows], { dtype: "u32" });
    const m = fromArray(gpu, mk, [rows]);
    const runs = await chunkedAndWhole(gpu, x0, w0, t, m, rows, v);
    const logits = matmulRef(Float32Array.from(x0), Float32Array.from(w0), rows, v, C, false, true);
    assertClose(runs[1].value, [crossEntropyRef(logits, tg, mk, v)], { what: "whole loss" });
    assertClose(runs[0].value, runs[1].value, { what: "chunked loss" });
    assertClose(runs[0].dx, runs[1].dx, { what: "dx", atol: 1e-6 });
    assertClose(runs[0].dw, runs[1].dw, { what: "dwte", atol: 1e-7 });
    t.dispose();
    m.dispose();
  });
}
