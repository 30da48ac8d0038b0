/** Elementwise kernels: fill, add/mul with a periodic (bias-style) second operand, scale, accumulate. */
import { f32, type Kernel, WGSL_GRID_PARAMS, WGSL_GROUP_INDEX } from "./kernel.ts";

/** Threads per workgroup of the elementwise kernels. */
export const ELEMENTWISE_WG = 64;

function elementwise(
  name: string,
  key: string,
  n: number,
  bindings: string[],
  body: string,
): Kernel {
  const decls = bindings.map((b, i) => `@group(0) @binding(${i}) var<storage, ${b};`).join("\n");
  return {
    name,
    key: `n${n}_${key}`,
    code: `${decls}
@compute @workgroup_size(${ELEMENTWISE_WG})
fn main(${WGSL_GRID_PARAMS}) {
  let i = ${WGSL_GROUP_INDEX} * ${ELEMENTWISE_WG}u + lid;
  if (i >= ${n}u) { return; }
  ${body}
}`,
  };
}

/** out[i] = value, for n elements. */
export function fillKernel(n: number, value: number): Kernel {
  return elementwise("fill", `v${value}`, n, ["read_write> out: array<f32>"], `out[i] = ${f32(value)};`);
}

/**
 * out[i] = a[i] (op) b[i % period]: `period` = n is the plain elementwise case, a smaller period
 * broadcasts b over the leading dimensions (a bias of the last dimension).
 */
export function binaryKernel(op: "add" | "mul", n: number, period: number): Kernel {
  const sym = op === "add" ? "+" : "*";
  const bi = period === n ? "i" : `i % ${period}u`;
  return elementwise(op, `p${period}`, n, [
    "read> a: array<f32>",
    "read> b: array<f32>",
    "read_write> out: array<f32>",
  ], `out[i] = a[i] ${sym} b[${bi}];`);
}

/** out[i] = a[i] * c. */
export function scaleKernel(n: number, c: number): Kernel {
  return elementwise("scale", `c${c}`, n, [
    "read> a: array<f32>",
    "read_write> out: array<f32>",
  ], `out[i] = a[i] * ${f32(c)};`);
}

/** dst[i] += src[i] (gradient accumulation). */
export function accumulateKernel(n: number): Kernel {
  return elementwise("accumulate", "", n, [
    "read> src: array<f32>",
    "read_write> dst: array<f32>",
  ], "dst[i] = dst[i] + src[i];");
}

/** out[i] = s[0] * c: the gradient of a sum or mean, broadcast back to its input's shape. */
export function broadcastScalarKernel(n: number, c: number): Kernel {
  return elementwise("broadcast_scalar", `c${c}`, n, [
    "read> s: array<f32>",
    "read_write> out: array<f32>",
  ], `out[i] = s[0] * ${f32(c)};`);
}
