/** Inverted dropout: a host-drawn mask in training mode, the identity (and no draws) in evaluation mode. */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { backward, evalMode, isTraining } from "../../core/autograd.ts";
import { dropout } from "../../core/ops/dropout.ts";
import { Rng } from "../../core/random.ts";
import { fromArray, full } from "../../core/tensor.ts";
import { assertClose, gpuTest, randomArray, rng } from "../helpers.ts";

const P = 0.3;
const SHAPE = [8, 37];

gpuTest(
  "training-mode dropout zeroes a p share and scales the rest by 1/(1 − p); its gradient is the mask",
  async (gpu) => {
    const xs = randomArray(rng(4), SHAPE[0] * SHAPE[1], 0.5, 1.5);
    const x = fromArray(gpu, xs, SHAPE, { requiresGrad: true });
    const y = dropout(x, P, new Rng(9));
    backward(y, full(gpu, SHAPE, 1));
    const [out, grad] = [await y.download(), await x.grad!.download()];
    // The mask the generator draws, rebuilt on the host: element i is dropped when draw i < p.
    const draws = new Rng(9);
    const mask = Float64Array.from(xs, () => (draws.next() < P ? 0 : 1 / (1 - P)));
    assertClose(out, xs.map((v, i) => v * mask[i]), { what: "dropout(x)" });
    assertClose(grad, mask, { what: "∂sum(dropout(x))/∂x" });
    const dropped = mask.filter((m) => m === 0).length / mask.length;
    ok(Math.abs(dropped - P) < 0.07, `dropped share ${dropped} vs p = ${P}`);
    for (const t of [x, y]) t.dispose();
  },
);

gpuTest("evaluation-mode dropout is the identity and draws nothing from the generator", (gpu) => {
  const x = fromArray(gpu, randomArray(rng(5), SHAPE[0] * SHAPE[1]), SHAPE);
  const g = new Rng(9);
  const before = g.state();
  equal(isTraining(), true);
  const y = evalMode(() => {
    equal(isTraining(), false);
    return dropout(x, P, g);
  });
  equal(isTraining(), true, "evalMode restores training mode");
  equal(y, x);
  deepEqual(g.state(), before);
  throws(() => evalMode(() => dropout(x, 1, g)), /p = 1 must be in \[0, 1\)/);
  x.dispose();
});
