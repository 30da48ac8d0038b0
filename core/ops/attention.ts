/**
 * Causal self-attention from a packed qkv [B, T, (H + 2·Hkv)·hd] (H q heads, then Hkv k heads, then
 * Hkv v heads; GPT-2's [B, T, 3C] is Hkv = H, LLaMA's grouped-query attention Hkv < H, query head h
 * reading k/v head ⌊h / (H/Hkv)⌋ as transformers' repeat_kv does): fused kernels (default; the variant
 * comes from kernels/select.ts: flash blocks on GPUs, per-query kernels on software adapters), or a
 * non-fused path built from ops (heads → Q·Kᵀ → causal softmax → ·V → merge) that tests use as a
 * reference and that keeps the T×T probabilities like PyTorch's eager attention.
 */
import {
  attentionBackwardKeyValueKernel,
  attentionBackwardQueryKernel,
  attentionForwardKernel,
  type AttentionShape,
  causalSoftmaxBackwardKernel,
  causalSoftmaxKernel,
  grouped,
  groupedHeadsKernel,
  type GroupSpan,
  headsKernel,
  qkvWidth,
} from "../../kernels/attention.ts";
import {
  FLASH_MAX_HEAD_DIM,
  flashBackwardKeyValueKernel,
  flashBackwardQueryKernel,
  flashForwardKernel,
} from "../../kernels/attention_flash.ts";
import { type Kernel, MAX_LOOP_ITERATIONS } from "../../kernels/kernel.ts";
import { type AttentionVariant, attentionVariant, flashPlan } from "../../kernels/select.ts";
import { record } from "../autograd.ts";
import type { Binding } from "../gpu.ts";
import type { TextureAllocation } from "../memory.ts";
import { empty, type Tensor, withCategory } from "../tensor.ts";
import { expectF32, fmt } from "./checks.ts";
import { matmul } from "./matmul.ts";
import { pack } from "./pack.ts";

export type { AttentionVariant };

/** Options of {@link attention}. */
export interface AttentionOptions {
  /** Fused kernels (default) or the non-fused reference path. */
  fused?: boolean;
  /** Force a fused variant (default: the device's kernel family picks, see kernels/select.ts). */
  variant?: AttentionVariant;
  /** K/V heads, dividing nHead (default nHead: GPT-2's multi-head attention). */
  nKvHead?: number;
}

/** Sizes of an attention call on qkv; throws naming the shape when it does not fit. */
export function attentionShape(qkv: Tensor, nHead: number, nKvHead: number = nHead): AttentionShape {
  if (nKvHead !== nHead) return groupedShape(qkv, nHead, nKvHead);
  if (qkv.shape.length !== 3 || qkv.shape[2] % 3 !== 0) {
    throw new Error(`attention: qkv ${fmt(qkv.shape)} must be [B, T, 3·C]`);
  }
  const [b, t, c3] = qkv.shape;
  const c = c3 / 3;
  if (!Number.isInteger(nHead) || nHead <= 0 || c % nHead !== 0 || (c / nHead) % 4 !== 0) {
    throw new Error(
      `attention: C = ${c} (qkv ${
        fmt(qkv.shape)
      }) must split into ${nHead} heads of a size that is a multiple of 4`,
    );
  }
  return { b, t, h: nHead, hd: c / nHead, hkv: nHead };
}

function groupedShape(qkv: Tensor, nHead: number, nKvHead: number): AttentionShape {
  const heads = `${nHead} query heads and ${nKvHead} k/v heads`;
  if (![nHead, nKvHead].every((n) => Number.isInteger(n) && n > 0) || nHead % nKvHead !== 0) {
    throw new Error(`attention: ${heads}: the k/v heads must be a positive divisor of the query heads`);
  }
  const parts = nHead + 2 * nKvHead;
  if (qkv.shape.length !== 3 || qkv.shape[2] % parts !== 0 || (qkv.shape[2] / parts) % 4 !== 0) {
    throw new Error(
      `attention: qkv ${fmt(qkv.shape)} must be [B, T, (H + 2·Hkv)·hd] with ${heads} ` +
        `(${parts} heads of a size that is a multiple of 4)`,
    );
  }
  const [b, t, w] = qkv.shape;
  return { b, t, h: nHead, hd: w / parts, hkv: nKvHead };
}

/**
 * Causal multi-head self-attention: qkv [B, T, (H + 2·Hkv)·hd] → [B, T, H·hd] (scale 1/√hd; GPT-2's
 * [B, T, 3C] → [B, T, C] by default, grouped-query attention with `nKvHead`).
 */
export function attention(qkv: Tensor, nHead: number, options: AttentionOptions = {}): Tensor {
  expectF32("attention", qkv);
  const s = attentionShape(qkv, nHead, options.nKvHead);
  if (options.fused === false) return attentionUnfused(qkv, s);
  return attentionFused(qkv, s, options.variant ?? attentionVariant(qkv.gpu.kernels, s, qkv.gpu.info.limits));
}

/**
 * The fused kernels of `variant`, built on demand (backward ones only when backward runs); the dK/dV
 * pass as one kernel per span of each group's query heads.
 */
interface FusedKernels {
  forward(): Kernel;
  query(): Kernel;
  keyValue(): Kernel[];
}

/**
 * The dK/dV kernels of `s`, dispatched in order: one over each whole group while its loop over the
 * group's query heads stays within `limit` loop iterations (DESIGN.md invariant 9), else one per span
 * of the group, each adding to what the previous one wrote. Throws naming the shape when one query
 * head alone passes the limit.
 */
export function keyValueKernels(
  s: AttentionShape,
  make: (span?: GroupSpan) => Kernel,
  limit: number = MAX_LOOP_ITERATIONS,
): Kernel[] {
  const whole = make();
  const g = s.h / s.hkv;
  if (!grouped(s) || whole.loops <= limit) return [whole];
  const perHead = whole.loops / g;
  const count = Math.floor(limit / perHead);
  if (count === 0) {
    throw new Error(
      `attention: the dK/dV pass of T = ${s.t} (${s.h} query heads, ${s.hkv} k/v heads) runs ${perHead} ` +
        `loop iterations per query head, past the ${limit} an invocation may run; use a shorter sequence`,
    );
  }
  return Array.from(
    { length: Math.ceil(g / count) },
    (_, i) => make({ first: i * count, count: Math.min(count, g - i * count) }),
  );
}

function fusedKernels(qkv: Tensor, s: AttentionShape, variant: AttentionVariant): FusedKernels {
  if (variant !== "flash") {
    return {
      forward: () => attentionForwardKernel(s, variant),
      query: () => attentionBackwardQueryKernel(s, variant),
      keyValue: () => keyValueKernels(s, (span) => attentionBackwardKeyValueKernel(s, variant, span)),
    };
  }
  const limits = qkv.gpu.info.limits;
  const plan = flashPlan(s, limits);
  if (!plan) {
    const heads = `${s.h} heads of ${s.hd}`;
    throw new Error(
      `attention: no flash blocks for qkv ${fmt(qkv.shape)} (${heads}): the flash kernels take heads up to ` +
        `${FLASH_MAX_HEAD_DIM} within ${limits.maxComputeWorkgroupStorageSize} bytes of workgroup memory; ` +
        `use the storage variant`,
    );
  }
  return {
    forward: () => flashForwardKernel(s, plan.forward),
    query: () => flashBackwardQueryKernel(s, plan.query),
    keyValue: () => keyValueKernels(s, (span) => flashBackwardKeyValueKernel(s, plan.keyValue, span)),
  };
}

function attentionFused(qkv: Tensor, s: AttentionShape, variant: AttentionVariant): Tensor {
  const gpu = qkv.gpu;
  const kernels = fusedKernels(qkv, s, variant);
  const src = variant === "texture" ? "texture" : "storage";
  const c = s.h * s.hd;
  const w = qkvWidth(s);
  const rows = s.b * s.t;
  const textures: TextureAllocation[] = [];
  /** Binding for a [B·T, cols] input: the buffer, or a texture copy of it. */
  const input = (t: Tensor, cols: number): Binding => {
    if (src === "storage") return t.binding("attention");
    const tex = pack(gpu, { src: t, rows, cols, stride: 0 }, false, cols / 4, rows, 1, "attention_in");
    textures.push(tex);
    return tex.texture.createView();
  };
  const done = () => {
    for (const t of textures.splice(0)) gpu.memory.freeTexture(t);
  };
  const out = empty(gpu, [s.b, s.t, c], { name: "attention" });
  const lse = empty(gpu, [s.b, s.h, s.t], { name: "attention_lse" });
  gpu.dispatch(kernels.forward(), [
    input(qkv, w),
    out.binding("attention"),
    lse.binding("attention"),
  ]);
  done();
  const result = record("attention", out, [qkv], [qkv, out, lse], (g) => {
    const dqkv = empty(gpu, qkv.shape, { name: "dattention" });
    const dd = withCategory("workspace", () => empty(gpu, [s.b, s.h, s.t], { name: "attention_dd" }));
    const [tq, to, tg] = [input(qkv, w), input(out, c), input(g, c)];
    gpu.dispatch(kernels.query(), [
      tq,
      to,
      tg,
      lse.binding("attention"),
      dd.binding("attention"),
      dqkv.binding("attention"),
    ]);
    for (const kernel of kernels.keyValue()) {
      gpu.dispatch(kernel, [
        tq,
        tg,
        lse.binding("attention"),
        dd.binding("attention"),
        dqkv.binding("attention"),
      ]);
    }
    done();
    dd.dispose();
    return [dqkv];
  });
  lse.dispose();
  return result;
}

/**
 * qkv → the heads of one part (0 q, 1 k, 2 v) as [B, H, T, hd], grouped k/v heads copied to each
 * query head of their group; backward scatters (and sums over the group) into zeros.
 */
function heads(x: Tensor, s: AttentionShape, part: number): Tensor {
  const gpu = x.gpu;
  const kernel = (scatter: boolean) =>
    grouped(s) ? groupedHeadsKernel(s, part, scatter) : headsKernel(s, 3, part, scatter);
  const y = empty(gpu, [s.b, s.h, s.t, s.hd], { name: `heads${part}` });
  gpu.dispatch(kernel(false), [x.binding("heads"), y.binding("heads")]);
  return record("heads", y, [x], [], (g) => {
    const dx = empty(gpu, x.shape, { name: "dheads" });
    dx.fill(0);
    gpu.dispatch(kernel(true), [g.binding("heads"), dx.binding("heads")]);
    return [dx];
  });
}

/** [B, H, T, hd] → [B, T, C]; backward gathers. */
function mergeHeads(o: Tensor, s: AttentionShape): Tensor {
  const gpu = o.gpu;
  const y = empty(gpu, [s.b, s.t, s.h * s.hd], { name: "merge_heads" });
  gpu.dispatch(headsKernel(s, 1, 0, true), [o.binding("heads"), y.binding("heads")]);
  return record("mergeHeads", y, [o], [], (g) => {
    const dx = empty(gpu, o.shape, { name: "dmerge_heads" });
    gpu.dispatch(headsKernel(s, 1, 0, false), [g.binding("heads"), dx.binding("heads")]);
    return [dx];
  });
}

/** softmax(scale·x) over the last dimension with a causal mask (x is [..., T, T]). */
export function causalSoftmax(x: Tensor, scale: number): Tensor {
  expectF32("causalSoftmax", x);
  const t = x.shape[x.shape.length - 1];
  if (x.shape.length < 2 || x.shape[x.shape.length - 2] !== t) {
    throw new Error(`causalSoftmax: x ${fmt(x.shape)} must end in [T, T]`);
  }
  const gpu = x.gpu;
  const rows = x.size / t;
  const y = empty(gpu, x.shape, { name: "causal_softmax" });
  gpu.dispatch(causalSoftmaxKernel(rows, t, scale), [x.binding("causalSoftmax"), y.binding("causalSoftmax")]);
  return record("causalSoftmax", y, [x], [y], (g) => {
    const dx = empty(gpu, x.shape, { name: "dcausal_softmax" });
    gpu.dispatch(causalSoftmaxBackwardKernel(rows, t, scale), [
      y.binding("causalSoftmax"),
      g.binding("causalSoftmax"),
      dx.binding("causalSoftmax"),
    ]);
    return [dx];
  });
}

function attentionUnfused(qkv: Tensor, s: AttentionShape): Tensor {
  const [q, k, v] = [0, 1, 2].map((p) => heads(qkv, s, p));
  const scores = matmul(q, k, { transB: true });
  const p = causalSoftmax(scores, 1 / Math.sqrt(s.hd));
  const o = matmul(p, v);
  const out = mergeHeads(o, s);
  for (const t of [q, k, v, scores, p, o]) t.dispose();
  return out;
}
