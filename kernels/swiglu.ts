/** SwiGLU (LLaMA's MLP gate): silu(gate) · up elementwise, silu(g) = g · sigmoid(g). */
import { elementwise } from "./elementwise.ts";
import { floatType, type Kernel, type Source, vectorWidth } from "./kernel.ts";

// sigmoid from exp(−|v|), which never overflows: 1/(1+e) for v ≥ 0, e/(1+e) below.
function common(t: string): string {
  return `
fn sigmoid(v: ${t}) -> ${t} {
  let e = exp(-abs(v));
  let p = 1.0 / (1.0 + e);
  return select(e * p, p, v >= ${t}(0.0));
}
`;
}

function kernel(name: string, n: number, ins: [string, Source][], outs: string[], body: string): Kernel {
  const w = vectorWidth(n);
  const bindings = [
    ...ins.map(([input, src]) => `in ${input} ${src}`),
    ...outs.map((o) => `read_write> ${o}: array<$T>`),
  ];
  return elementwise(name, ins.map(([, src]) => src).join("_"), n, w, bindings, body, common(floatType(w)));
}

/** out = silu(gate) · up, n elements. Bindings: gate, up, out. */
export function swigluForwardKernel(n: number, gate: Source = "storage", up: Source = "storage"): Kernel {
  return kernel(
    "swiglu_forward",
    n,
    [["gate", gate], ["up", up]],
    ["out"],
    `let g = gate(i);
  out[i] = g * sigmoid(g) * up(i);`,
  );
}

/** Which input gradients a backward kernel writes. */
export type SwigluGrads = "both" | "gate" | "up";

/**
 * d(gate) = dy · up · σ(g)(1 + g(1 − σ(g))) and/or d(up) = dy · silu(g), n elements. Bindings: gate,
 * up (only when d(gate) is written), dy, then d(gate) and/or d(up).
 */
export function swigluBackwardKernel(
  n: number,
  grads: SwigluGrads,
  gate: Source = "storage",
  up: Source = "storage",
  dy: Source = "storage",
): Kernel {
  const wantGate = grads !== "up";
  const wantUp = grads !== "gate";
  const ins: [string, Source][] = wantGate
    ? [["gate", gate], ["up", up], ["dy", dy]]
    : [["gate", gate], ["dy", dy]];
  const outs = [...(wantGate ? ["dgate"] : []), ...(wantUp ? ["dup"] : [])];
  return kernel(
    `swiglu_backward_${grads}`,
    n,
    ins,
    outs,
    `let g = gate(i);
  let s = sigmoid(g);
  let d = dy(i);${wantGate ? "\n  dgate[i] = d * up(i) * s * (1.0 + g * (1.0 - s));" : ""}${
      wantUp ? "\n  dup[i] = d * g * s;" : ""
    }`,
  );
}
