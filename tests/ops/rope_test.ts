import { equal, throws } from "node:assert/strict";
import { backward, clearTape, noGrad, savedActivationBytes } from "../../core/autograd.ts";
import { checkRopeScaling, rope } from "../../core/ops/rope.ts";
import { fromArray } from "../../core/tensor.ts";
import { ropeRef } from "../reference/cpu.ts";
import { assertClose, checkOp, gpuTest, kernelVariants, randomArray, rng } from "../helpers.ts";

gpuTest("rope pairs i with i + D/2 (rotate_half), as Hugging Face's LLaMA does", async (gpu) => {
  // D = 4, theta 10000: inv_freq = [1, 1/100]. Position 0 is the identity; at position 1,
  // out = [x0·cos1 − x2·sin1, x1·cos.01 − x3·sin.01, x2·cos1 + x0·sin1, x3·cos.01 + x1·sin.01].
  // Interleaved pairs (0,1), (2,3) would give [−1.14264, 1.92208, 2.95985, 4.02980] instead.
  const x = fromArray(gpu, [1, 2, 3, 4, 1, 2, 3, 4], [1, 2, 1, 4], { requiresGrad: true });
  const y = rope(x, 10000);
  assertClose(await y.download(), [
    1,
    2,
    3,
    4,
    -1.9841106485555495,
    1.959900667496664,
    2.4623779024123156,
    4.019799668334994,
  ], { what: "rope at positions 0 and 1" });
  // The gradient of Σ g·rope(x) is the turn by −angle: for g = e0 at position 1, [cos1, 0, −sin1, 0].
  const g = fromArray(gpu, [0, 0, 0, 0, 1, 0, 0, 0], [1, 2, 1, 4]);
  backward(y, g);
  assertClose(
    await x.grad!.download(),
    [0, 0, 0, 0, Math.cos(1), 0, -Math.sin(1), 0],
    { what: "rope backward at position 1" },
  );
  for (const t of [x, y, g]) t.dispose();
});

gpuTest("rope matches the reference and finite differences at odd sizes in every kernel family", async () => {
  // D = 10 and 6 (D/2 odd: one pair per invocation), 8 and 32 (four pairs as vec4); [3, 67, 3, 32]
  // is big enough to be read through a texture copy on software adapters.
  const cases: [number[], number][] = [
    [[2, 7, 3, 10], 10000],
    [[1, 5, 1, 6], 10000],
    [[2, 7, 3, 8], 500000],
    [[3, 67, 3, 32], 10000],
  ];
  for (const [name, gpu] of await kernelVariants()) {
    for (const [shape, theta] of cases) {
      const [b, t, h, d] = shape;
      await checkOp(gpu, {
        shapes: [shape],
        run: ([x]) => rope(x, theta),
        reference: ([x]) => ropeRef(x, b, t, h, d, theta),
        maxDifferences: 60,
      }).catch((e) => {
        throw new Error(`${name}, [${shape}], theta ${theta}: ${e.message}`);
      });
    }
  }
});

gpuTest("rope saves only its cos/sin table, never its input", async (gpu) => {
  clearTape();
  const [b, t, h, d] = [2, 7, 3, 10];
  const x = fromArray(gpu, new Float32Array(b * t * h * d).fill(1), [b, t, h, d], { requiresGrad: true });
  const y = rope(x);
  equal(savedActivationBytes(), 2 * t * (d / 2) * 4);
  clearTape();
  const z = noGrad(() => rope(x));
  equal(savedActivationBytes(), 0);
  equal(z.node, null);
  await z.download();
  for (const u of [x, y, z]) u.dispose();
});

gpuTest("rope refuses inputs that are not [B, T, H, D] with an even D, and a bad theta", (gpu) => {
  const odd = fromArray(gpu, new Float32Array(2 * 3 * 5), [1, 2, 3, 5]);
  const flat = fromArray(gpu, new Float32Array(24), [6, 4]);
  const x = fromArray(gpu, new Float32Array(4), [1, 1, 1, 4]);
  throws(() => rope(odd), /rope: x \[1, 2, 3, 5\] must be \[B, T, H, D\] with an even head dimension D/);
  throws(() => rope(flat), /rope: x \[6, 4\] must be/);
  throws(() => rope(x, 0), /rope: theta 0 must be a positive finite number/);
  for (const t of [odd, flat, x]) t.dispose();
});

Deno.test("rope_scaling: none is accepted, every scaling type is refused by name", () => {
  checkRopeScaling(null);
  checkRopeScaling(undefined);
  checkRopeScaling({ rope_type: "default" });
  throws(
    () => checkRopeScaling({ type: "linear", factor: 2 }),
    (e: Error) =>
      e.message === 'rope_scaling {"type":"linear","factor":2} is not implemented; supported: none',
  );
  throws(
    () => checkRopeScaling({ rope_type: "llama3", factor: 8, original_max_position_embeddings: 8192 }),
    /rope_scaling \{"rope_type":"llama3",.*\} is not implemented; supported: none/,
  );
  throws(() => checkRopeScaling({ type: "dynamic", factor: 4 }), /"type":"dynamic"/);
  throws(() => checkRopeScaling("yarn"), /rope_scaling "yarn" is not implemented/);
});

gpuTest("rope over more than 65,535 workgroups of pairs (a 2-D dispatch) turns every pair", async (gpu) => {
  // 3·7·39946 heads of D = 10: 4,194,330 pairs, one per invocation, past 65,535 × 64.
  const [b, t, h, d] = [3, 7, 39946, 10];
  const n = b * t * h * d;
  const xs = randomArray(rng(11), n);
  const gs = randomArray(rng(12), n);
  const x = fromArray(gpu, xs, [b, t, h, d], { requiresGrad: true });
  const y = rope(x);
  const g = fromArray(gpu, gs, [b, t, h, d]);
  const out = await y.download();
  backward(y, g);
  assertClose(out, ropeRef(xs, b, t, h, d), { what: "rope forward" });
  // Each position's turn is orthogonal, so its transpose (backward) is its inverse: rope(dx) = g.
  assertClose(ropeRef(await x.grad!.download(), b, t, h, d), gs, { what: "rope(backward(g))" });
  for (const u of [x, y, g]) u.dispose();
});

gpuTest("rope on a projection's [B, T, H·D] output with `heads` is the [B, T, H, D] rope", async (gpu) => {
  const [b, t, h, d] = [2, 5, 3, 8];
  await checkOp(gpu, {
    shapes: [[b, t, h * d]],
    run: ([x]) => rope(x, 10000, h),
    reference: ([x]) => ropeRef(x, b, t, h, d, 10000),
    maxDifferences: 40,
  });
  const x = fromArray(gpu, new Float32Array(b * t * 12), [b, t, 12]);
  throws(() => rope(x, 10000, 4), /does not split into 4 heads of an even size/);
  throws(() => rope(x, 10000, 5), /does not split into 5 heads/);
  x.dispose();
});
