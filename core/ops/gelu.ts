/** GELU (tanh form, GPT-2's gelu_new): forward and backward. */
import { geluBackwardKernel, geluForwardKernel } from "../../kernels/gelu.ts";
import { record } from "../autograd.ts";
import { empty, type Tensor } from "../tensor.ts";
import { expectF32 } from "./checks.ts";

/** gelu(x) elementwise. */
export function gelu(x: Tensor): Tensor {
  expectF32("gelu", x);
  const y = empty(x.gpu, x.shape, { name: "gelu" });
  x.gpu.dispatch(geluForwardKernel(x.size), [x.binding("gelu"), y.binding("gelu")]);
  return record("gelu", y, [x], [x], (g) => {
    const dx = empty(x.gpu, x.shape, { name: "dgelu" });
    x.gpu.dispatch(geluBackwardKernel(x.size), [x.binding("gelu"), g.binding("gelu"), dx.binding("gelu")]);
    return [dx];
  });
}
