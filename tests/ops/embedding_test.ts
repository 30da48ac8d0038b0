import { deepEqual, throws } from "node:assert/strict";
import { embedding, groupByToken } from "../../core/ops/embedding.ts";
import { fromArray } from "../../core/tensor.ts";
import { embeddingRef } from "../reference/cpu.ts";
import { checkOp, gpuTest } from "../helpers.ts";

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
