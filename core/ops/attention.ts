/**
 * Causal self-attention from GPT-2's packed qkv [B, T, 3C]: the fused flash-style kernels
 * (default), or a non-fused path built from ops (heads → Q·Kᵀ → causal softmax → ·V → merge) that
 * tests use as a reference and that keeps the T×T probabilities like PyTorch's eager attention.
 */
import {
  attentionBackwardKeyValueKernel,
  attentionBackwardQueryKernel,
  attentionForwardKernel,
  type AttentionShape,
  type AttentionSource,
  causalSoftmaxBackwardKernel,
  causalSoftmaxKernel,
  headsKernel,
} from "../../kernels/attention.ts";
import { attentionReadsTextures } from "../../kernels/select.ts";
import { record } from "../autograd.ts";
import type { Binding } from "../gpu.ts";
import type { TextureAllocation } from "../memory.ts";
import { empty, type Tensor, withCategory } from "../tensor.ts";
import { expectF32, fmt } from "./checks.ts";
import { matmul } from "./matmul.ts";
import { pack } from "./pack.ts";

/** Options of {@link attention}. */
export interface AttentionOptions {
  /** Fused flash-style kernels (default) or the non-fused reference path. */
  fused?: boolean;
  /** Force where the fused kernels read from (default: textures on software adapters). */
  source?: AttentionSource;
}

/** Sizes of an attention call on qkv; throws naming the shape when it does not fit. */
export function attentionShape(qkv: Tensor, nHead: number): AttentionShape {
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
  return { b, t, h: nHead, hd: c / nHead };
}

/** Causal multi-head self-attention: qkv [B, T, 3C] → [B, T, C] (scale 1/√hd). */
export function attention(qkv: Tensor, nHead: number, options: AttentionOptions = {}): Tensor {
  expectF32("attention", qkv);
  const s = attentionShape(qkv, nHead);
  return options.fused === false ? attentionUnfused(qkv, s) : attentionFused(qkv, s, options.source);
}

function chooseSource(qkv: Tensor, s: AttentionShape, forced?: AttentionSource): AttentionSource {
  if (forced) return forced;
  const max = qkv.gpu.info.limits.maxTextureDimension2D;
  return attentionReadsTextures(qkv.gpu.kernels, (3 * s.h * s.hd) / 4, s.b * s.t, max)
    ? "texture"
    : "storage";
}

function attentionFused(qkv: Tensor, s: AttentionShape, forced?: AttentionSource): Tensor {
  const gpu = qkv.gpu;
  const src = chooseSource(qkv, s, forced);
  const c = s.h * s.hd;
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
  gpu.dispatch(attentionForwardKernel(s, src), [
    input(qkv, 3 * c),
    out.binding("attention"),
    lse.binding("attention"),
  ]);
  done();
  const result = record("attention", out, [qkv], [qkv, out, lse], (g) => {
    const dqkv = empty(gpu, qkv.shape, { name: "dattention" });
    const dd = withCategory("workspace", () => empty(gpu, [s.b, s.h, s.t], { name: "attention_dd" }));
    const [tq, to, tg] = [input(qkv, 3 * c), input(out, c), input(g, c)];
    gpu.dispatch(attentionBackwardQueryKernel(s, src), [
      tq,
      to,
      tg,
      lse.binding("attention"),
      dd.binding("attention"),
      dqkv.binding("attention"),
    ]);
    gpu.dispatch(attentionBackwardKeyValueKernel(s, src), [
      tq,
      tg,
      lse.binding("attention"),
      dd.binding("attention"),
      dqkv.binding("attention"),
    ]);
    done();
    dd.dispose();
    return [dqkv];
  });
  lse.dispose();
  return result;
}

/** [B, T, parts·C] → the heads of one part as [B, H, T, hd]; backward scatters into zeros. */
function heads(x: Tensor, s: AttentionShape, parts: number, part: number): Tensor {
  const gpu = x.gpu;
  const y = empty(gpu, [s.b, s.h, s.t, s.hd], { name: `heads${part}` });
  gpu.dispatch(headsKernel(s, parts, part, false), [x.binding("heads"), y.binding("heads")]);
  return record("heads", y, [x], [], (g) => {
    const dx = empty(gpu, x.shape, { name: "dheads" });
    dx.fill(0);
    gpu.dispatch(headsKernel(s, parts, part, true), [g.binding("heads"), dx.binding("heads")]);
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
  const [q, k, v] = [0, 1, 2].map((p) => heads(qkv, s, 3, p));
  const scores = matmul(q, k, { transB: true });
  const p = causalSoftmax(scores, 1 / Math.sqrt(s.hd));
  const o = matmul(p, v);
  const out = mergeHeads(o, s);
  for (const t of [q, k, v, scores, p, o]) t.dispose();
  return out;
}
