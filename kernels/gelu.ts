/** GELU, tanh form (GPT-2's `gelu_new`): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
import { floatType, grid, type Kernel, vectorWidth, WGSL_GRID_PARAMS, WGSL_GROUP_INDEX } from "./kernel.ts";

// tanh(u) = 1 - 2/(exp(2u)+1) stays finite for any u (exp overflowing to inf gives exactly 1).
function common(t: string): string {
  return `
const S = 0.7978845608028654;
const C = 0.044715;
fn tanh_safe(u: ${t}) -> ${t} { return 1.0 - 2.0 / (exp(2.0 * u) + 1.0); }`;
}

function kernel(name: string, n: number, bindings: string, body: string): Kernel {
  const w = vectorWidth(n);
  const t = floatType(w);
  return {
    name,
    key: `n${n}_w${w}`,
    workgroups: grid(Math.ceil(n / w / 64)),
    code: `${common(t)}
${bindings.replaceAll("$T", t)}
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let i = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (i >= ${n / w}u) { return; }
  ${body}
}`,
  };
}

/** y = gelu(x), n elements. */
export function geluForwardKernel(n: number): Kernel {
  return kernel(
    "gelu_forward",
    n,
    `@group(0) @binding(0) var<storage, read> x: array<$T>;
@group(0) @binding(1) var<storage, read_write> y: array<$T>;`,
    `let v = x[i];
  y[i] = 0.5 * v * (1.0 + tanh_safe(S * (v + C * v * v * v)));`,
  );
}

/** dx = dy · gelu'(x), n elements. */
export function geluBackwardKernel(n: number): Kernel {
  return kernel(
    "gelu_backward",
    n,
    `@group(0) @binding(0) var<storage, read> x: array<$T>;
@group(0) @binding(1) var<storage, read> dy: array<$T>;
@group(0) @binding(2) var<storage, read_write> dx: array<$T>;`,
    `let v = x[i];
  let t = tanh_safe(S * (v + C * v * v * v));
  let d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * S * (1.0 + 3.0 * C * v * v);
  dx[i] = dy[i] * d;`,
  );
}
