/**
 * Elementwise kernels: fill, add/mul with a periodic (bias-style) second operand, scale,
 * accumulate. Each invocation handles a vec4 when the sizes allow (see `vectorWidth`).
 */
import {
  f32,
  floatInput,
  floatType,
  grid,
  type Kernel,
  type Source,
  vectorWidth,
  WGSL_GRID_PARAMS,
  WGSL_GROUP_INDEX,
} from "./kernel.ts";

/** Threads per workgroup of the elementwise kernels. */
export const ELEMENTWISE_WG = 64;

/**
 * A kernel over n elements, `w` per invocation. Bindings are `access> name: array<$T>` ($T the unit
 * type), or `in name src` for an input read as name(i) from a buffer or a texture copy; `prelude`
 * (constants, helper functions) goes before them.
 */
export function elementwise(
  name: string,
  key: string,
  n: number,
  w: 1 | 4,
  bindings: string[],
  body: string,
  prelude = "",
): Kernel {
  const t = floatType(w);
  const decls = bindings.map((b, i) => {
    const [kind, input, src] = b.split(" ");
    if (kind !== "in") return `@group(0) @binding(${i}) var<storage, ${b.replace("$T", t)};`;
    return floatInput(name, input, i, w, src as Source);
  }).join("\n");
  const units = n / w;
  return {
    name,
    key: `n${n}_w${w}_${key}`,
    loops: 0,
    workgroups: grid(Math.ceil(units / ELEMENTWISE_WG)),
    code: `${prelude}${decls}
@compute @workgroup_size(${ELEMENTWISE_WG})
fn main(${WGSL_GRID_PARAMS}) {
  let i = ${WGSL_GROUP_INDEX} * ${ELEMENTWISE_WG}u + lid;
  if (i >= ${units}u) { return; }
  ${body}
}`,
  };
}

/** out[i] = value, for n elements. */
export function fillKernel(n: number, value: number): Kernel {
  const w = vectorWidth(n);
  return elementwise(
    "fill",
    `v${value}`,
    n,
    w,
    ["read_write> out: array<$T>"],
    `out[i] = ${floatType(w)}(${f32(value)});`,
  );
}

/**
 * out[i] = a[i] (op) b[i % period]: `period` = n is the plain elementwise case, a smaller period
 * broadcasts b over the leading dimensions (a bias of the last dimension).
 */
export function binaryKernel(
  op: "add" | "mul",
  n: number,
  period: number,
  as: Source = "storage",
  bs: Source = "storage",
): Kernel {
  const w = vectorWidth(n, period);
  const sym = op === "add" ? "+" : "*";
  const bi = period === n ? "i" : `i % ${period / w}u`;
  return elementwise(op, `p${period}_${as}_${bs}`, n, w, [
    `in a ${as}`,
    `in b ${bs}`,
    "read_write> out: array<$T>",
  ], `out[i] = a(i) ${sym} b(${bi});`);
}

/** out[i] = a[i] * c. */
export function scaleKernel(n: number, c: number): Kernel {
  return elementwise("scale", `c${c}`, n, vectorWidth(n), [
    "read> a: array<$T>",
    "read_write> out: array<$T>",
  ], `out[i] = a[i] * ${f32(c)};`);
}

/** dst[i] += src[i] (gradient accumulation). */
export function accumulateKernel(n: number, srcFrom: Source = "storage"): Kernel {
  return elementwise("accumulate", srcFrom, n, vectorWidth(n), [
    `in src ${srcFrom}`,
    "read_write> dst: array<$T>",
  ], "dst[i] = dst[i] + src(i);");
}

/** out[i] = s[0] * c: the gradient of a sum or mean, broadcast back to its input's shape. */
export function broadcastScalarKernel(n: number, c: number): Kernel {
  const w = vectorWidth(n);
  return elementwise("broadcast_scalar", `c${c}`, n, w, [
    "read> s: array<f32>",
    "read_write> out: array<$T>",
  ], `out[i] = ${floatType(w)}(s[0] * ${f32(c)});`);
}
