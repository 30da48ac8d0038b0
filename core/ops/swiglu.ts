/** SwiGLU, LLaMA's MLP activation silu(gate) · up: forward and backward (d(gate), d(up)). */
import { vectorWidth } from "../../kernels/kernel.ts";
import { swigluBackwardKernel, swigluForwardKernel, type SwigluGrads } from "../../kernels/swiglu.ts";
import { needsGrad, record } from "../autograd.ts";
import { empty, type Tensor } from "../tensor.ts";
import { expectF32, expectSameGpu, expectSameShape } from "./checks.ts";
import { vec4Input } from "./pack.ts";

/** silu(gate) · up elementwise, silu(g) = g · sigmoid(g); gate and up have the same shape. */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  expectF32("swiglu", gate);
  expectF32("swiglu", up);
  expectSameGpu("swiglu", gate, up);
  expectSameShape("swiglu", gate, up);
  const gpu = gate.gpu;
  const n = gate.size;
  const w = vectorWidth(n);
  const y = empty(gpu, gate.shape, { name: "swiglu" });
  const [gi, ui] = [vec4Input(gate, "swiglu", w), vec4Input(up, "swiglu", w)];
  gpu.dispatch(swigluForwardKernel(n, gi.src, ui.src), [gi.binding, ui.binding, y.binding("swiglu")]);
  gi.done();
  ui.done();
  // Both gradients need gate; only d(gate) needs up.
  const [wantGate, wantUp] = [needsGrad(gate), needsGrad(up)];
  return record("swiglu", y, [gate, up], [gate, wantGate && up], (g) => {
    const grads: SwigluGrads = wantGate && wantUp ? "both" : wantGate ? "gate" : "up";
    const dgate = wantGate ? empty(gpu, gate.shape, { name: "dgate" }) : null;
    const dup = wantUp ? empty(gpu, up.shape, { name: "dup" }) : null;
    const gi = vec4Input(gate, "swiglu", w);
    const ui = wantGate ? vec4Input(up, "swiglu", w) : null;
    const dy = vec4Input(g, "swiglu", w);
    const ins = [gi, ui, dy].filter((t) => t !== null);
    const outs = [dgate, dup].filter((t) => t !== null);
    gpu.dispatch(
      swigluBackwardKernel(n, grads, gi.src, ui?.src, dy.src),
      [...ins.map((t) => t.binding), ...outs.map((t) => t.binding("swiglu"))],
    );
    for (const t of ins) t.done();
    return [dgate, dup];
  });
}
