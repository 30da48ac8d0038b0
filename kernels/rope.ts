/**
 * Rotary position embeddings in Hugging Face's `rotate_half` convention: element i of a head is
 * paired with element i + D/2 (not i + 1), and pair i at position t turns by angle t · inv_freq[i].
 * One invocation turns one pair, or four neighbouring pairs as vec4 when D/2 divides by 4.
 */
import { elementwise } from "./elementwise.ts";
import { type Kernel, type Source, vectorWidth } from "./kernel.ts";

/** The layout of x: [B, T, H, D] row-major, the same rotation for every head of a position. */
export interface RopeShape {
  /** Batch items. */
  b: number;
  /** Positions (0..T−1). */
  t: number;
  /** Heads. */
  h: number;
  /** Head dimension (even). */
  d: number;
}

/**
 * out = x turned by +angle (forward) or −angle (backward: the transpose), for x [B, T, H, D] and a
 * table [2, T, D/2] holding cos then sin of every position's angles. Bindings: x, table, out.
 */
export function ropeKernel(s: RopeShape, direction: "forward" | "backward", x: Source = "storage"): Kernel {
  const half = s.d / 2;
  const w = vectorWidth(half);
  const hu = half / w;
  // rotate_half(x) = cat(−x[D/2:], x[:D/2]): the low half gains −x_hi·sin, the high half +x_lo·sin.
  const sin = direction === "forward" ? "table[p + TABLE_SIN]" : "-table[p + TABLE_SIN]";
  return elementwise(
    `rope_${direction}`,
    `t${s.t}_h${s.h}_d${s.d}_${x}`,
    s.b * s.t * s.h * half,
    w,
    [`in x ${x}`, "read> table: array<$T>", "read_write> out: array<$T>"],
    `let r = i / ${hu}u;
  let j = i % ${hu}u;
  let lo = r * ${2 * hu}u + j;
  let hi = lo + ${hu}u;
  let p = (r / ${s.h}u) % ${s.t}u * ${hu}u + j;
  let c = table[p];
  let sn = ${sin};
  let a = x(lo);
  let b = x(hi);
  out[lo] = a * c - b * sn;
  out[hi] = b * c + a * sn;`,
    `const TABLE_SIN = ${s.t * hu}u;\n`,
  );
}
