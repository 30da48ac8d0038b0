/**
 * Inverted dropout: each element is zeroed with probability p and the rest scaled by 1/(1 − p). The
 * mask is drawn on the host from the caller's seeded generator, so runs repeat exactly; it is a
 * multiplication by a mask tensor, so the backward is mul's. Outside training mode (`evalMode`) it is
 * the identity and draws nothing, so evaluating never moves the generator a resumed run depends on.
 */
import { isTraining } from "../autograd.ts";
import type { Rng } from "../random.ts";
import { fromArray, type Tensor } from "../tensor.ts";
import { mul } from "./elementwise.ts";

/** x with elements dropped with probability `p` (p = 0 or evaluation mode returns x itself). */
export function dropout(x: Tensor, p: number, rng: Rng): Tensor {
  if (!(p >= 0 && p < 1)) throw new Error(`dropout: p = ${p} must be in [0, 1)`);
  if (p === 0 || !isTraining()) return x;
  const keep = 1 / (1 - p);
  const mask = new Float32Array(x.size);
  for (let i = 0; i < mask.length; i++) mask[i] = rng.next() < p ? 0 : keep;
  const m = fromArray(x.gpu, mask, x.shape, { name: "dropout_mask" });
  const y = mul(x, m);
  m.dispose();
  return y;
}
