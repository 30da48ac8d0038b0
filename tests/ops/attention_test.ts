import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { attention } from "../../core/ops/attention.ts";
import { fromArray } from "../../core/tensor.ts";
import { backward } from "../../core/autograd.ts";
import type { Gpu } from "../../core/gpu.ts";
import { type FlashPass, flashWorkgroupBytes } from "../../kernels/attention_flash.ts";
import { attentionVariant, flashPlan } from "../../kernels/select.ts";
import { attentionRef } from "../reference/cpu.ts";
import { assertClose, checkOp, gpuTest, param, randomArray, rng } from "../helpers.ts";

// T = 13 is not a multiple of the 8-key block; hd = 8.
const [B, T, C, H] = [2, 13, 16, 2];

for (
  const [label, opts] of [
    ["fused, storage reads", { fused: true, variant: "storage" }],
    ["fused, texture reads", { fused: true, variant: "texture" }],
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

/** checkOp of flash attention on qkv [b, t, 3c] with h heads. */
function checkFlash(gpu: Gpu, b: number, t: number, c: number, h: number, seed = 1): Promise<void> {
  return checkOp(gpu, {
    shapes: [[b, t, 3 * c]],
    run: ([qkv]) => attention(qkv, h, { variant: "flash" }),
    reference: ([qkv]) => attentionRef(qkv, b, t, c, h),
    seed,
    gradRtol: 2e-3,
    gradAtol: 2e-4,
    maxDifferences: 120,
  });
}

// Flash tiles are 64 queries (or keys) per workgroup with 8 to 32 staged: T = 13 and 1 sit in one
// partial block, T = 70 spans two query blocks and three key blocks with a ragged last one.
gpuTest("flash attention (hd 8) matches the CPU reference and finite differences", async (gpu) => {
  for (const t of [13, 1, 70]) await checkFlash(gpu, 2, t, 16, 2, t);
}, { kernels: "gpu" });

// GPT-2's head size: dO (dQ pass) and k, v (dK/dV pass) live in workgroup rows. T = 150 spans three
// query blocks, five key blocks and ten staged query blocks of the dK/dV pass.
const LONG = [2, 150, 128, 2];

gpuTest("flash attention (hd 64) matches the CPU reference and finite differences", async (gpu) => {
  const [b, t, c, h] = LONG;
  await checkFlash(gpu, b, t, c, h);
}, { kernels: "gpu" });

// hd = 68 also keeps q in workgroup rows and splits the dK/dV columns over two workgroups, 17 vec4s
// into 9 + 8 (so the last column of the second part lies past the head). Lavapipe compiles these
// kernels slowly, so one small shape.
gpuTest("flash attention (hd 68) matches the CPU reference and finite differences", async (gpu) => {
  await checkFlash(gpu, 1, 9, 68, 1);
}, { kernels: "gpu" });

/** Forward values and qkv gradient of attention on `data` [b, t, 3c] against weights `w` [b, t, c]. */
async function valuesAndGrad(
  gpu: Gpu,
  data: Float64Array,
  w: Float64Array,
  [b, t, c, h]: number[],
  opts: Parameters<typeof attention>[2],
): Promise<{ values: Float32Array; grad: Float32Array }> {
  const qkv = param(gpu, data, [b, t, 3 * c], "qkv");
  const wt = fromArray(gpu, w, [b, t, c]);
  const out = attention(qkv, h, opts);
  const values = await out.download();
  backward(out, wt);
  const grad = await qkv.grad!.download();
  for (const x of [qkv, out, wt]) x.dispose();
  return { values, grad };
}

/** Asserts that `opts` and the non-fused path agree on a random problem of sizes [b, t, c, h]. */
async function agreesWithUnfused(gpu: Gpu, sizes: number[], opts: Parameters<typeof attention>[2]) {
  const [b, t, c] = sizes;
  const rand = rng(7);
  const data = randomArray(rand, b * t * 3 * c, -2, 2);
  const w = randomArray(rand, b * t * c);
  const fused = await valuesAndGrad(gpu, data, w, sizes, opts);
  const unfused = await valuesAndGrad(gpu, data, w, sizes, { fused: false });
  assertClose(fused.values, unfused.values, { what: "forward", atol: 1e-5 });
  assertClose(fused.grad, unfused.grad, { what: "gradient", atol: 1e-5 });
}

gpuTest("fused and non-fused attention agree, forward and backward, on a longer sequence", async (gpu) => {
  await agreesWithUnfused(gpu, [1, 70, 64, 4], {}); // 3C = 192: qkv reaches the texture by plain copy
});

gpuTest("flash and non-fused attention agree, forward and backward, on a longer sequence", async (gpu) => {
  await agreesWithUnfused(gpu, LONG, { variant: "flash" });
}, { kernels: "gpu" });

gpuTest("flash attention with 16 KiB of workgroup memory runs smaller blocks and agrees", async (gpu) => {
  const limits = gpu.info.limits;
  const saved = limits.maxComputeWorkgroupStorageSize;
  limits.maxComputeWorkgroupStorageSize = 16384;
  try {
    const [b, t, c, h] = LONG;
    const plan = flashPlan({ b, t, h, hd: c / h }, limits);
    ok(plan && plan.keyValue.threads < 32 && plan.query.threads < 64, "the test needs smaller blocks");
    await agreesWithUnfused(gpu, LONG, { variant: "flash" });
  } finally {
    limits.maxComputeWorkgroupStorageSize = saved;
  }
}, { kernels: "gpu" });

Deno.test("flash blocks fit the workgroup memory they are planned for, largest first", () => {
  const gpt2 = { b: 8, t: 1024, h: 12, hd: 64 };
  // An H200 gives 48 KiB: 64 queries or keys per workgroup in every pass.
  deepEqual(flashPlan(gpt2, { maxComputeWorkgroupStorageSize: 49152 }), {
    forward: { threads: 64, block: 32 },
    query: { threads: 64, block: 32 },
    keyValue: { threads: 64, block: 16 },
  });
  for (const bytes of [16384, 32768, 49152]) {
    for (const hd of [4, 8, 64, 68, 128]) {
      const plan = flashPlan({ ...gpt2, hd }, { maxComputeWorkgroupStorageSize: bytes });
      if (!plan) {
        ok(hd === 128 && bytes === 16384, `no plan for hd ${hd} in ${bytes} bytes`);
        continue;
      }
      for (const pass of Object.keys(plan) as FlashPass[]) {
        ok(flashWorkgroupBytes(pass, hd, plan[pass]) <= bytes, `${pass}, hd ${hd}, ${bytes} bytes`);
      }
    }
  }
  equal(flashPlan({ ...gpt2, hd: 132 }, { maxComputeWorkgroupStorageSize: 49152 }), null);
});

Deno.test("attention variants: flash on GPUs where it fits, textures on software adapters where they fit", () => {
  const s = { b: 8, t: 1024, h: 12, hd: 64 };
  const limits = { maxComputeWorkgroupStorageSize: 49152, maxTextureDimension2D: 16384 };
  equal(attentionVariant("gpu", s, limits), "flash");
  equal(attentionVariant("gpu", { ...s, hd: 256 }, limits), "storage");
  equal(attentionVariant("software", s, limits), "texture");
  equal(attentionVariant("software", { ...s, b: 17 }, limits), "storage");
});

gpuTest("attention refuses shapes that do not split into heads", (gpu) => {
  const x = fromArray(gpu, new Float32Array(2 * 3 * 30), [2, 3, 30]);
  throws(() => attention(x, 3), /C = 10 .* must split into 3 heads/);
  throws(() => attention(x, 5), /C = 10 .* must split into 5 heads of a size that is a multiple of 4/);
  const y = fromArray(gpu, new Float32Array(8), [2, 4]);
  throws(() => attention(y, 1), /qkv \[2, 4\] must be \[B, T, 3·C\]/);
  const wide = fromArray(gpu, new Float32Array(3 * 132), [1, 1, 3 * 132]);
  throws(() => attention(wide, 1, { variant: "flash" }), /flash kernels take heads up to 128/);
  for (const t of [x, y, wide]) t.dispose();
});
