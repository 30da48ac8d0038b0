/**
 * Fused AdamW: one dispatch updates a parameter and both moments, in PyTorch's order (decoupled
 * decay p ← p·(1 − lr·wd), then p ← p − lr/bc1 · m / (√v/√bc2 + eps)). Per-step values (lr and the
 * bias corrections) come from a small buffer so the pipeline is compiled once per shape; the
 * gradient is multiplied by the clip factor the clip kernel wrote on the GPU (no readback).
 */
import {
  f32,
  floatType,
  grid,
  type Kernel,
  vec4Input,
  vectorWidth,
  WGSL_GRID_PARAMS,
  WGSL_GROUP_INDEX,
} from "./kernel.ts";

/** Floats per parameter in the hyper-parameter buffer (one 256-byte aligned slot each). */
export const HYPER_SLOT = 64;

/** AdamW constants baked into the kernel. */
export interface AdamWConstants {
  beta1: number;
  beta2: number;
  eps: number;
  /** Decoupled weight decay for this parameter (0 for biases and LayerNorm weights). */
  weightDecay: number;
}

/**
 * p, m, v updated in place from g. Bindings: p (rw), g, m (rw), v (rw), hyper (lr, bc1, bc2 at the
 * parameter's slot), clip (clip factor at 0). With `textures` (software adapters) p, g, m, v are
 * read from texture copies instead: bindings p (rw), m (rw), v (rw), hyper, clip, then the copies
 * of p, g, m, v.
 */
export function adamwKernel(n: number, c: AdamWConstants, textures = false): Kernel {
  const w = vectorWidth(n);
  const t = floatType(w);
  if (textures && w !== 4) throw new Error("adamw: texture inputs need a size divisible by 4");
  const read = (name: string, binding: number) =>
    textures
      ? vec4Input(`${name}_in`, binding, "texture")
      : `fn ${name}_in(i: u32) -> ${t} { return ${name}[i]; }`;
  return {
    name: "adamw",
    key: `n${n}_w${w}_b${c.beta1}_${c.beta2}_e${c.eps}_wd${c.weightDecay}_tex${+textures}`,
    loops: 0,
    workgroups: grid(Math.ceil(n / w / 64)),
    code: `${
      textures
        ? `@group(0) @binding(0) var<storage, read_write> p: array<${t}>;
@group(0) @binding(1) var<storage, read_write> m: array<${t}>;
@group(0) @binding(2) var<storage, read_write> v: array<${t}>;
@group(0) @binding(3) var<storage, read> hyper: array<f32>;
@group(0) @binding(4) var<storage, read> clip: array<f32>;`
        : `@group(0) @binding(0) var<storage, read_write> p: array<${t}>;
@group(0) @binding(1) var<storage, read> g: array<${t}>;
@group(0) @binding(2) var<storage, read_write> m: array<${t}>;
@group(0) @binding(3) var<storage, read_write> v: array<${t}>;
@group(0) @binding(4) var<storage, read> hyper: array<f32>;
@group(0) @binding(5) var<storage, read> clip: array<f32>;`
    }
${read("p", 5)}
${read("g", 6)}
${read("m", 7)}
${read("v", 8)}
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let i = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (i >= ${n / w}u) { return; }
  let lr = hyper[0];
  let bc1 = hyper[1];
  let bc2 = hyper[2];
  let gi = g_in(i) * clip[0];
  let mi = ${f32(c.beta1)} * m_in(i) + ${f32(1 - c.beta1)} * gi;
  let vi = ${f32(c.beta2)} * v_in(i) + ${f32(1 - c.beta2)} * gi * gi;
  m[i] = mi;
  v[i] = vi;
  let denom = sqrt(vi) / sqrt(bc2) + ${f32(c.eps)};
  p[i] = p_in(i) * (1.0 - lr * ${f32(c.weightDecay)}) - (lr / bc1) * mi / denom;
}`,
  };
}

/** clip[0] = min(1, maxNorm / (norm[0] + 1e-6)), PyTorch's clip_grad_norm_ factor. */
export function clipFactorKernel(maxNorm: number): Kernel {
  return {
    name: "clip_factor",
    key: `max${maxNorm}`,
    loops: 0,
    workgroups: [1],
    code: `@group(0) @binding(0) var<storage, read> norm: array<f32>;
@group(0) @binding(1) var<storage, read_write> clip: array<f32>;
@compute @workgroup_size(1)
fn main() {
  clip[0] = min(1.0, ${f32(maxNorm)} / (norm[0] + 1e-6));
}`,
  };
}
