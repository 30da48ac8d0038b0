/** GELU (tanh form, GPT-2's gelu_new): forward and backward. */
import { vectorWidth } from "../../kernels/kernel.ts";
import { geluBackwardKernel, geluForwardKernel } from "../../kernels/gelu.ts";
import { record } from "../autograd.ts";
import { empty, type Tensor } from "../tensor.ts";
import { expectF32 } from "./checks.ts";
import { vec4Input } from "./pack.ts";

/** gelu(x) elementwise. */
export function gelu(x: Tensor): Tensor {
  expectF32("gelu", x);
  const y = empty(x.gpu, x.shape, { name: "gelu" });
  const w = vectorWidth(x.size);
  const xin = vec4Input(x, "gelu", w);
  x.gpu.dispatch(geluForwardKernel(x.size, xin.src), [xin.binding, y.binding("gelu")]);
  xin.done();
  return record("gelu", y, [x], [x], (g) => {
    const dx = empty(x.gpu, x.shape, { name: "dgelu" });
    const [xi, gi] = [vec4Input(x, "gelu", w), vec4Input(g, "gelu", w)];
    x.gpu.dispatch(geluBackwardKernel(x.size, xi.src, gi.src), [xi.binding, gi.binding, dx.binding("gelu")]);
    xi.done();
    gi.done();
    return [dx];
  });
}
