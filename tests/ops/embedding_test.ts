import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { embedding, embeddingPasses, groupByToken } from "../../core/ops/embedding.ts";
import { fromArray } from "../../core/tensor.ts";
import { backward } from "../../core/autograd.ts";
import { embeddingRef } from "../reference/cpu.ts";
import { checkOp, gpuTest, KERNEL_FAMILIES, testGpu } from "../helpers.ts";

gpuTest("embedding gathers rows; repeated ids sum their gradients", async (gpu) => {
  const ids = [2, 0, 2, 5, 2, 1, 0];
  const [v, d] = [6, 5];
  const idt = fromArray(gpu, ids, [7], { dtype: "u32" });
  await checkOp(gpu, {
    shapes: [[v, d]],
    run: ([table]) => embedding(table, idt, ids),
    reference: ([table]) => embeddingRef(table, ids, d),
  });
  idt.dispose();
});

Deno.test("groupByToken lists each token's positions in order", () => {
  const g = groupByToken([2, 0, 2, 5]);
  deepEqual([...g.tokens], [0, 2, 5]);
  deepEqual([...g.start], [0, 1, 3, 4]);
  deepEqual([...g.order], [1, 0, 2, 3]);
});

gpuTest("embedding refuses ids outside the table", (gpu) => {
  const table = fromArray(gpu, new Float32Array(6), [3, 2]);
  const ids = fromArray(gpu, [0, 3], [2], { dtype: "u32" });
  throws(() => embedding(table, ids, [0, 3]), /id 3 at position 1 is outside the table's 3 rows/);
  table.dispose();
  ids.dispose();
});

Deno.test("embedding passes split long runs so no output sums more than the span, and sum every group", () => {
  const runs = [5, 1, 12, 2, 30];
  const start = Uint32Array.from([0, ...runs.map((_, i) => runs.slice(0, i + 1).reduce((a, b) => a + b))]);
  const values = Float64Array.from({ length: start[runs.length] }, (_, p) => (p * 37) % 11);
  // The longest run (30) takes the fewest passes p with span^p ≥ 30.
  for (const [span, count] of [[2, 5], [3, 4], [7, 2], [30, 1]]) {
    const passes = embeddingPasses(start, span);
    let rows: Float64Array = values;
    for (const pass of passes) {
      ok(pass.maxRun <= span, `span ${span}: a pass sums ${pass.maxRun} rows`);
      equal(pass.start[0], 0);
      equal(pass.start[pass.start.length - 1], rows.length);
      rows = Float64Array.from({ length: pass.start.length - 1 }, (_, k) => {
        let s = 0;
        for (let p = pass.start[k]; p < pass.start[k + 1]; p++) s += rows[p];
        return s;
      });
    }
    const expected = runs.map((_, k) => values.slice(start[k], start[k + 1]).reduce((a, b) => a + b, 0));
    deepEqual([...rows], expected, `span ${span}`);
    equal(passes.length, count, `passes at span ${span}`);
  }
  throws(() => embeddingPasses(start, 1), /span 1 must be at least 2/);
});

for (const family of KERNEL_FAMILIES) {
  gpuTest(`embedding backward sums a token seen 70,000 times (${family} kernels)`, async () => {
    const gpu = await testGpu(family);
    const ids = Array.from({ length: 70000 }, (_, i) => (i % 9 === 4 ? i % 3 : 1));
    const [v, d] = [4, 3];
    const idt = fromArray(gpu, ids, [ids.length], { dtype: "u32" });
    await checkOp(gpu, {
      shapes: [[v, d]],
      run: ([table]) => embedding(table, idt, ids),
      reference: ([table]) => embeddingRef(table, ids, d),
    });
    idt.dispose();
  });
}

gpuTest("batches with different numbers of distinct tokens share the backward's pipelines", async (gpu) => {
  const [v, d] = [7, 3];
  const table = fromArray(gpu, Float32Array.from({ length: v * d }, (_, i) => i / 10), [v, d], {
    requiresGrad: true,
    category: "weights",
  });
  const grads: Float32Array[] = [];
  let compiled = 0;
  for (const ids of [[1, 1, 1, 1, 1, 1], [0, 1, 2, 3, 4, 6], [5, 5, 2, 2, 5, 0]]) {
    const before = gpu.pipelines.size;
    const idt = fromArray(gpu, ids, [6], { dtype: "u32" });
    const y = embedding(table, idt, ids);
    backward(y, fromArray(gpu, Float32Array.from({ length: 6 * d }, (_, i) => i + 1), [6, d]));
    grads.push(await table.grad!.download());
    table.zeroGrad();
    compiled = gpu.pipelines.size - before;
    for (const t of [idt, y]) t.dispose();
  }
  equal(compiled, 0, "the third batch compiled nothing new");
  // Token 5 of the third batch sums positions 0, 1 and 4: rows 1+2+3, 4+5+6 and 13+14+15 of dy.
  deepEqual([...grads[2].slice(5 * d, 6 * d)], [18, 21, 24]);
  deepEqual([...grads[1].slice(5 * d, 6 * d)], [0, 0, 0]);
  table.dispose();
});
