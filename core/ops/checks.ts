/** Input checks shared by ops: errors name the op and every shape involved. */
import type { Tensor } from "../tensor.ts";

/** Throws unless `t` is f32. */
export function expectF32(op: string, t: Tensor): void {
  if (t.dtype !== "f32") throw new Error(`${op}: ${t} must be f32, got ${t.dtype}`);
}

/** Throws unless all tensors live on the same device. */
export function expectSameGpu(op: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.gpu !== ts[0].gpu) throw new Error(`${op}: ${t} and ${ts[0]} are on different devices`);
  }
}

/** Throws unless `a` and `b` have the same shape. */
export function expectSameShape(op: string, a: Tensor, b: Tensor): void {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new Error(`${op}: shapes differ: ${a} and ${b}`);
  }
}

/**
 * Throws unless `targets` is u32 and `mask` f32 with one entry per row (`rows` rows), as the masked
 * cross-entropy ops need; `owner` names the rows' tensor with its verb ("x [6, 8] has").
 */
export function expectRowTargets(
  op: string,
  owner: string,
  rows: number,
  targets: Tensor,
  mask: Tensor,
): void {
  if (targets.dtype !== "u32") throw new Error(`${op}: targets ${targets} must be u32 token ids`);
  expectF32(op, mask);
  if (targets.size !== rows || mask.size !== rows) {
    throw new Error(
      `${op}: ${owner} ${rows} rows but targets ${fmt(targets.shape)} and mask ${
        fmt(mask.shape)
      } must have one entry per row`,
    );
  }
}

/** "[2, 3]" */
export function fmt(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
