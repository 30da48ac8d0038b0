/** Embedding lookup (wte, wpe) and its deterministic backward. */
import { embeddingBackwardKernel, embeddingForwardKernel } from "../../kernels/embedding.ts";
import { record } from "../autograd.ts";
import { empty, fromArray, type Tensor, withCategory } from "../tensor.ts";
import { expectF32, expectSameGpu, fmt } from "./checks.ts";

/**
 * Groups positions by token (CSR): `tokens` are the distinct ids in increasing order, positions of
 * tokens[u] are order[start[u] .. start[u+1]), each group in increasing position order.
 */
export function groupByToken(
  ids: ArrayLike<number>,
): { tokens: Uint32Array; start: Uint32Array; order: Uint32Array } {
  const order = Uint32Array.from({ length: ids.length }, (_, i) => i).sort((a, b) =>
    ids[a] - ids[b] || a - b
  );
  const tokens: number[] = [];
  const start: number[] = [];
  order.forEach((p, i) => {
    if (i === 0 || ids[p] !== ids[order[i - 1]]) {
      tokens.push(ids[p]);
      start.push(i);
    }
  });
  start.push(ids.length);
  return { tokens: Uint32Array.from(tokens), start: Uint32Array.from(start), order };
}

/**
 * Rows of `table` [V, D] picked by `ids` (u32, any shape): output shape ids.shape + [D]. The ids'
 * host copy (`hostIds`) groups positions by token for the deterministic backward.
 */
export function embedding(table: Tensor, ids: Tensor, hostIds: ArrayLike<number>): Tensor {
  expectF32("embedding", table);
  expectSameGpu("embedding", table, ids);
  if (ids.dtype !== "u32") throw new Error(`embedding: ids ${ids} must be u32`);
  if (table.shape.length !== 2) throw new Error(`embedding: table ${fmt(table.shape)} must be [V, D]`);
  if (hostIds.length !== ids.size) {
    throw new Error(`embedding: ${hostIds.length} host ids for ids ${fmt(ids.shape)}`);
  }
  const [v, d] = table.shape;
  const n = ids.size;
  for (let i = 0; i < n; i++) {
    if (!(hostIds[i] >= 0 && hostIds[i] < v)) {
      throw new Error(
        `embedding: id ${hostIds[i]} at position ${i} is outside the table's ${v} rows (${table})`,
      );
    }
  }
  const gpu = table.gpu;
  const out = empty(gpu, [...ids.shape, d], { name: "embedding" });
  gpu.dispatch(embeddingForwardKernel(n, v, d), [
    table.binding("embedding"),
    ids.binding("embedding"),
    out.binding("embedding"),
  ]);
  const host = Uint32Array.from(hostIds);
  return record("embedding", out, [table], [], (g) => {
    const { tokens, start, order } = groupByToken(host);
    const dtable = empty(gpu, table.shape, { name: "dembedding" });
    dtable.fill(0);
    const [tTok, tStart, tOrder] = withCategory("workspace", () => [
      fromArray(gpu, tokens, [tokens.length], { dtype: "u32", name: "emb_tokens" }),
      fromArray(gpu, start, [start.length], { dtype: "u32", name: "emb_start" }),
      fromArray(gpu, order, [order.length], { dtype: "u32", name: "emb_order" }),
    ]);
    let maxRun = 0;
    for (let i = 0; i < tokens.length; i++) maxRun = Math.max(maxRun, start[i + 1] - start[i]);
    gpu.dispatch(embeddingBackwardKernel(tokens.length, d, maxRun), [
      g.binding("embedding"),
      tOrder.binding("embedding"),
      tStart.binding("embedding"),
      tTok.binding("embedding"),
      dtable.binding("embedding"),
    ]);
    for (const t of [tTok, tStart, tOrder]) t.dispose();
    return [dtable];
  });
}
