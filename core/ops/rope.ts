/**
 * Rotary position embeddings, as Hugging Face's LLaMA applies them to q and k: forward turns each
 * pair (i, i + D/2) of a head by t · inv_freq[i]; backward is the transpose (the turn by −angle).
 * cos and sin come from a host-made table, since WGSL's sin and cos promise nothing outside [−π, π]
 * and GPUs lose digits on long positions.
 */
import { vectorWidth } from "../../kernels/kernel.ts";
import { ropeKernel, type RopeShape } from "../../kernels/rope.ts";
import { record } from "../autograd.ts";
import { empty, fromArray, type Tensor } from "../tensor.ts";
import { expectF32, fmt } from "./checks.ts";
import { vec4Input } from "./pack.ts";

/** LLaMA's default rope_theta. */
export const ROPE_THETA = 10000;

let cached: { key: string; table: Float32Array } | null = null;

/**
 * cos then sin of t · inv_freq[i] for t < T, i < D/2 ([2, T, D/2], row-major), rounded as Hugging
 * Face computes them in f32 (inv_freq = 1/theta^(2i/D), then t · inv_freq), so long positions match
 * its numbers. The last table is kept: q and k of every layer ask for the same one.
 */
function ropeTable(t: number, d: number, theta: number = ROPE_THETA): Float32Array {
  const key = `${t}_${d}_${theta}`;
  if (cached?.key === key) return cached.table;
  const half = d / 2;
  const table = new Float32Array(2 * t * half);
  const f = Math.fround;
  for (let i = 0; i < half; i++) {
    const invFreq = f(1 / f(Math.pow(f(theta), f((2 * i) / d))));
    for (let p = 0; p < t; p++) {
      const angle = f(p * invFreq);
      table[p * half + i] = Math.cos(angle);
      table[(t + p) * half + i] = Math.sin(angle);
    }
  }
  cached = { key, table };
  return table;
}

/**
 * x [B, T, H, D] with rotary position embeddings applied at positions 0..T−1 (same result shape):
 * x · cos + rotate_half(x) · sin, rotate_half(x) = cat(−x[D/2:], x[:D/2]), theta = rope_theta.
 * A projection's output [B, T, H·D] is taken as it is with `heads` = H (the same memory layout).
 */
export function rope(x: Tensor, theta: number = ROPE_THETA, heads?: number): Tensor {
  expectF32("rope", x);
  if (heads !== undefined && x.shape.length === 3) {
    const [b, t, c] = x.shape;
    if (!(Number.isInteger(heads) && heads > 0 && c % heads === 0 && (c / heads) % 2 === 0)) {
      throw new Error(`rope: x ${fmt(x.shape)} does not split into ${heads} heads of an even size`);
    }
    return ropeOf(x, theta, [b, t, heads, c / heads]);
  }
  if (x.shape.length !== 4 || x.shape[3] % 2 !== 0) {
    throw new Error(`rope: x ${fmt(x.shape)} must be [B, T, H, D] with an even head dimension D`);
  }
  return ropeOf(x, theta, x.shape as [number, number, number, number]);
}

function ropeOf(x: Tensor, theta: number, [b, t, h, d]: readonly number[]): Tensor {
  if (!(theta > 0 && Number.isFinite(theta))) {
    throw new Error(`rope: theta ${theta} must be a positive finite number`);
  }
  const s: RopeShape = { b, t, h, d };
  const gpu = x.gpu;
  const table = fromArray(gpu, ropeTable(t, d, theta), [2, t, d / 2], { name: "rope_table" });
  const w = vectorWidth(d / 2);
  const turn = (src: Tensor, direction: "forward" | "backward", name: string) => {
    const out = empty(gpu, src.shape, { name });
    const xi = vec4Input(src, "rope", w);
    gpu.dispatch(ropeKernel(s, direction, xi.src), [xi.binding, table.binding("rope"), out.binding("rope")]);
    xi.done();
    return out;
  };
  // Linear in x: backward needs only the table, never x.
  const y = record("rope", turn(x, "forward", "rope"), [x], [table], (g) => [turn(g, "backward", "drope")]);
  table.dispose();
  return y;
}

/** Throws unless a Hugging Face `rope_scaling` value asks for no scaling (null, absent, or type "default"). */
export function checkRopeScaling(value: unknown): void {
  if (value === null || value === undefined) return;
  if (typeof value === "object" && !Array.isArray(value)) {
    // Older configs name the type `type`, newer ones `rope_type`; "default" is plain RoPE.
    const { type, rope_type: ropeType } = value as { type?: unknown; rope_type?: unknown };
    if ((ropeType ?? type) === "default") return;
  }
  throw new Error(`rope_scaling ${JSON.stringify(value)} is not implemented; supported: none`);
}
