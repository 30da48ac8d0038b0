/** Embedding lookup (wte, wpe) and its deterministic backward. */
import { embeddingBackwardKernel, embeddingForwardKernel } from "../../kernels/embedding.ts";
import { embeddingRunSpan } from "../../kernels/select.ts";
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

/** One pass of the embedding backward: output k sums the pass's input rows [start[k], start[k+1]). */
export interface EmbeddingPass {
  /** Offsets into the pass's input rows, one more than its outputs. */
  start: Uint32Array;
  /** The most input rows any output sums. */
  maxRun: number;
}

/**
 * The passes that sum each group of rows (CSR offsets `start`, every group non-empty) with no output
 * summing more than `span` (≥ 2) rows: while a group is longer, the pass splits every group into
 * runs of at most `span` rows and the next pass sums each group's runs, so the last pass has one
 * output per group.
 */
export function embeddingPasses(start: Uint32Array, span: number): EmbeddingPass[] {
  if (!(span >= 2)) throw new Error(`embeddingPasses: span ${span} must be at least 2`);
  const passes: EmbeddingPass[] = [];
  let groups = start;
  for (;;) {
    let maxRun = 0;
    for (let k = 0; k + 1 < groups.length; k++) maxRun = Math.max(maxRun, groups[k + 1] - groups[k]);
    if (maxRun <= span) return [...passes, { start: groups, maxRun }];
    const runs: number[] = [];
    const next: number[] = [];
    for (let k = 0; k + 1 < groups.length; k++) {
      next.push(runs.length);
      for (let p = groups[k]; p < groups[k + 1]; p += span) runs.push(p);
    }
    next.push(runs.length);
    runs.push(groups[groups.length - 1]);
    passes.push({ start: Uint32Array.from(runs), maxRun: span });
    groups = Uint32Array.from(next);
  }
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
    const upload = (a: Uint32Array, name: string) =>
      withCategory("workspace", () => fromArray(gpu, a, [a.length], { dtype: "u32", name }));
    const [tTok, tOrder] = [upload(tokens, "emb_tokens"), upload(order, "emb_order")];
    const passes = embeddingPasses(start, embeddingRunSpan(gpu.kernels));
    let src = g;
    passes.forEach((pass, i) => {
      const [first, last] = [i === 0, i === passes.length - 1];
      const u = pass.start.length - 1;
      const dst = last
        ? dtable
        : withCategory("workspace", () => empty(gpu, [u, d], { name: "emb_partials" }));
      const tStart = upload(pass.start, "emb_start");
      gpu.dispatch(
        embeddingBackwardKernel(u, d, pass.maxRun, first, last),
        [src, ...(first ? [tOrder] : []), tStart, ...(last ? [tTok] : []), dst].map((t) =>
          t.binding("embedding")
        ),
      );
      tStart.dispose();
      if (!first) src.dispose();
      src = dst;
    });
    for (const t of [tTok, tOrder]) t.dispose();
    return [dtable];
  });
}
