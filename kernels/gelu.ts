/** GELU, tanh form (GPT-2's `gelu_new`): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
import {
  floatInput,
  floatType,
  grid,
  type Kernel,
  type Source,
  vectorWidth,
  WGSL_GRID_PARAMS,
  WGSL_GROUP_INDEX,
} from "./kernel.ts";

// tanh(u) = 1 - 2/(exp(2u)+1) stays finite for any u (exp overflowing to inf gives exactly 1).
function common(t: string): string {
  return `
const S = 0.7978845608028654;
const C = 0.044715;
fn tanh_safe(u: ${t}) -> ${t} { return 1.0 - 2.0 / (exp(2.0 * u) + 1.0); }`;
}

/** Inputs (bindings 0..) as functions name(i): vec4 units from their source, or plain f32 arrays. */
function inputs(kernel: string, ins: [string, Source][], w: 1 | 4): string {
  return ins.map(([n, src], i) => floatInput(kernel, n, i, w, src)).join("\n");
}

function kernel(name: string, n: number, ins: [string, Source][], body: string): Kernel {
  const w = vectorWidth(n);
  const t = floatType(w);
  return {
    name,
    key: `n${n}_w${w}_${ins.map(([, src]) => src).join("_")}`,
    workgroups: grid(Math.ceil(n / w / 64)),
    code: `${common(t)}
${inputs(name, ins, w)}
@group(0) @binding(${ins.length}) var<storage, read_write> out: array<${t}>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let i = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (i >= ${n / w}u) { return; }
  ${body}
}`,
  };
}

/** y = gelu(x), n elements. Bindings: x, y. */
export function geluForwardKernel(n: number, x: Source = "storage"): Kernel {
  return kernel(
    "gelu_forward",
    n,
    [["x", x]],
    `let v = x(i);
  out[i] = 0.5 * v * (1.0 + tanh_safe(S * (v + C * v * v * v)));`,
  );
}

/** dx = dy · gelu'(x), n elements. Bindings: x, dy, dx. */
export function geluBackwardKernel(n: number, x: Source = "storage", dy: Source = "storage"): Kernel {
  return kernel(
    "gelu_backward",
    n,
    [["x", x], ["dy", dy]],
    `let v = x(i);
  let t = tanh_safe(S * (v + C * v * v * v));
  let d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * S * (1.0 + 3.0 * C * v * v);
  out[i] = dy(i) * d;`,
  );
}
