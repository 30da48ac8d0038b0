import { gelu } from "../../core/ops/gelu.ts";
import { geluRef } from "../reference/cpu.ts";
import { checkOp, gpuTest } from "../helpers.ts";

gpuTest("gelu matches gelu_new and its finite differences", async (gpu) => {
  await checkOp(gpu, { shapes: [[3, 37]], run: ([x]) => gelu(x), reference: ([x]) => geluRef(x) });
  await checkOp(gpu, { shapes: [[4, 8]], run: ([x]) => gelu(x), reference: ([x]) => geluRef(x) });
  // Big enough to be read through a texture copy on software adapters, with a partial last texel row.
  await checkOp(gpu, { shapes: [[128, 136]], run: ([x]) => gelu(x), reference: ([x]) => geluRef(x) });
});

gpuTest("gelu stays finite for large inputs", async (gpu) => {
  const x = Float64Array.from([-100, -30, -10, 0, 10, 30, 100]);
  await checkOp(gpu, {
    shapes: [[7]],
    inputs: [x],
    run: ([t]) => gelu(t),
    reference: ([t]) => geluRef(t),
  });
});
