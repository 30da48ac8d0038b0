import { throws } from "node:assert/strict";
import { attention } from "../../core/ops/attention.ts";
import { fromArray } from "../../core/tensor.ts";
import { backward } from "../../core/autograd.ts";
import { attentionRef } from "../reference/cpu.ts";
import { assertClose, checkOp, gpuTest, param, randomArray, rng } from "../helpers.ts";

// T = 13 is not a multiple of the 8-key block; hd = 8.
const [B, T, C, H] = [2, 13, 16, 2];

for (
  const [label, opts] of [
    ["fused, storage reads", { fused: true, source: "storage" }],
    ["fused, texture reads", { fused: true, source: "texture" }],
    ["non-fused", { fused: false }],
  ] as const
) {
  gpuTest(`attention (${label}) matches the CPU reference and finite differences`, async (gpu) => {
    await checkOp(gpu, {
      shapes: [[B, T, 3 * C]],
      run: ([qkv]) => attention(qkv, H, opts),
      reference: ([qkv]) => attentionRef(qkv, B, T, C, H),
      gradRtol: 2e-3,
      gradAtol: 2e-4,
    });
  });
}

gpuTest("fused and non-fused attention agree, forward and backward, on a longer sequence", async (gpu) => {
  const [b, t, c, h] = [1, 70, 64, 4]; // 3C = 192: qkv reaches the texture by plain copy
  const rand = rng(7);
  const data = randomArray(rand, b * t * 3 * c, -2, 2);
  const w = fromArray(gpu, randomArray(rand, b * t * c), [b, t, c]);
  const results = [];
  for (const fused of [true, false]) {
    const qkv = param(gpu, data, [b, t, 3 * c], "qkv");
    const out = attention(qkv, h, { fused });
    const values = await out.download();
    backward(out, w);
    results.push({ values, grad: await qkv.grad!.download() });
    qkv.dispose();
    out.dispose();
  }
  assertClose(results[0].values, results[1].values, { what: "forward", atol: 1e-5 });
  assertClose(results[0].grad, results[1].grad, { what: "gradient", atol: 1e-5 });
});

gpuTest("attention refuses shapes that do not split into heads", (gpu) => {
  const x = fromArray(gpu, new Float32Array(2 * 3 * 30), [2, 3, 30]);
  throws(() => attention(x, 3), /C = 10 .* must split into 3 heads/);
  throws(() => attention(x, 5), /C = 10 .* must split into 5 heads of a size that is a multiple of 4/);
  const y = fromArray(gpu, new Float32Array(8), [2, 4]);
  throws(() => attention(y, 1), /qkv \[2, 4\] must be \[B, T, 3·C\]/);
  x.dispose();
  y.dispose();
});
