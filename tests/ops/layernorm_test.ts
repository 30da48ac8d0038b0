import { throws } from "node:assert/strict";
import { layerNorm } from "../../core/ops/layernorm.ts";
import { fromArray } from "../../core/tensor.ts";
import { layerNormRef } from "../reference/cpu.ts";
import { checkOp, gpuTest, kernelVariants } from "../helpers.ts";

gpuTest("layerNorm matches the reference and finite differences for x, gamma and beta", async (gpu) => {
  // [260, 64] is big enough to be read through texture copies on software adapters; [4096, 6] is
  // too, as a whole, but its rows are not vec4 units, so it must be read from its buffer.
  for (const [rows, c] of [[3, 7], [131, 5], [70, 8], [260, 64], [4096, 6]]) {
    await checkOp(gpu, {
      shapes: [[rows, c], [c], [c]],
      run: ([x, g, b]) => layerNorm(x, g, b),
      reference: ([x, g, b]) => layerNormRef(x, g, b, c),
      gradRtol: 2e-3,
      gradAtol: 5e-4,
    });
  }
});

gpuTest("layerNorm refuses parameters of the wrong size", (gpu) => {
  const x = fromArray(gpu, new Float32Array(6), [2, 3]);
  const g = fromArray(gpu, new Float32Array(2), [2]);
  throws(
    () => layerNorm(x, g, g),
    /gamma \[2\] and beta \[2\] must have 3 elements, the last dimension of x \[2, 3\]/,
  );
  x.dispose();
  g.dispose();
});

gpuTest(
  "layerNorm over GPT-2 widths (768, 1600) and odd ones matches the reference in every kernel family",
  async () => {
    for (const [name, gpu] of await kernelVariants()) {
      // 21847 floats: three passes over such a row pass 65,535 loop iterations, so even the
      // software family takes a workgroup per row.
      for (const [rows, c] of [[5, 1601], [6, 768], [3, 1600], [70, 8], [2, 21847]]) {
        await checkOp(gpu, {
          shapes: [[rows, c], [c], [c]],
          run: ([x, g, b]) => layerNorm(x, g, b),
          reference: ([x, g, b]) => layerNormRef(x, g, b, c),
          gradRtol: 2e-3,
          gradAtol: 5e-4,
          maxDifferences: 40,
        }).catch((e) => {
          throw new Error(`${name}, [${rows}, ${c}]: ${e.message}`);
        });
      }
    }
  },
);
