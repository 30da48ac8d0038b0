/** GELU, tanh form (GPT-2's `gelu_new`): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
import { elementwise } from "./elementwise.ts";
import { floatType, type Kernel, type Source, vectorWidth } from "./kernel.ts";

// tanh(u) = 1 - 2/(exp(2u)+1) stays finite for any u (exp overflowing to inf gives exactly 1).
function common(t: string): string {
  return `
const S = 0.7978845608028654;
const C = 0.044715;
fn tanh_safe(u: ${t}) -> ${t} { return 1.0 - 2.0 / (exp(2.0 * u) + 1.0); }
`;
}

function kernel(name: string, n: number, ins: [string, Source][], body: string): Kernel {
  const w = vectorWidth(n);
  const bindings = [...ins.map(([input, src]) => `in ${input} ${src}`), "read_write> out: array<$T>"];
  return elementwise(name, ins.map(([, src]) => src).join("_"), n, w, bindings, body, common(floatType(w)));
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
