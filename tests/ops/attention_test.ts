import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { attention, attentionShape, keyValueKernels } from "../../core/ops/attention.ts";
import { fromArray } from "../../core/tensor.ts";
import { backward, savedActivationBytes } from "../../core/autograd.ts";
import type { Gpu } from "../../core/gpu.ts";
import {
  attentionBackwardKeyValueKernel,
  attentionForwardKernel,
  type AttentionShape,
  type GroupSpan,
} from "../../kernels/attention.ts";
import {
  flashBackwardKeyValueKernel,
  flashForwardKernel,
  type FlashPass,
  flashWorkgroupBytes,
} from "../../kernels/attention_flash.ts";
import type { KernelFamily } from "../../kernels/select.ts";
import { attentionVariant, flashPlan } from "../../kernels/select.ts";
import { attentionRef, groupedAttentionRef } from "../reference/cpu.ts";
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
    const plan = flashPlan({ b, t, h, hd: c / h, hkv: h }, limits);
    ok(plan && plan.keyValue.threads < 32 && plan.query.threads < 64, "the test needs smaller blocks");
    await agreesWithUnfused(gpu, LONG, { variant: "flash" });
  } finally {
    limits.maxComputeWorkgroupStorageSize = saved;
  }
}, { kernels: "gpu" });

Deno.test("flash blocks fit the workgroup memory they are planned for, largest first", () => {
  const gpt2 = { b: 8, t: 1024, h: 12, hd: 64, hkv: 12 };
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
  const s = { b: 8, t: 1024, h: 12, hd: 64, hkv: 12 };
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

// Grouped-query attention (LLaMA's num_key_value_heads < num_attention_heads), sizes [b, t, h, hkv, hd]:
// two query heads per k/v head with T below one 8-key block; multi-query (every query head reads the
// one k/v head) with hd = 12 (3 vec4s) and T = 33 past a 32-query staged block; and H = Hkv.
const GROUPED = [[2, 7, 4, 2, 8], [1, 33, 6, 1, 12], [1, 33, 3, 3, 12]];

type Options = Parameters<typeof attention>[2];

const GROUPED_VARIANTS: [string, Options, KernelFamily | undefined][] = [
  ["storage reads", { variant: "storage" }, undefined],
  ["texture reads", { variant: "texture" }, undefined],
  ["flash", { variant: "flash" }, "gpu"],
  ["non-fused", { fused: false }, undefined],
];

Deno.test("the grouped CPU reference with Hkv = H is GPT-2's attention reference", () => {
  const [b, t, h, hd] = [2, 5, 3, 4];
  const qkv = randomArray(rng(3), b * t * 3 * h * hd);
  assertClose(groupedAttentionRef(qkv, b, t, h, h, hd), attentionRef(qkv, b, t, h * hd, h), { atol: 1e-12 });
});

for (const [label, opts, kernels] of GROUPED_VARIANTS) {
  gpuTest(
    `grouped-query attention (${label}) matches the CPU reference and finite differences`,
    async (gpu) => {
      for (const [b, t, h, hkv, hd] of GROUPED) {
        await checkOp(gpu, {
          shapes: [[b, t, (h + 2 * hkv) * hd]],
          run: ([qkv]) => attention(qkv, h, { ...opts, nKvHead: hkv }),
          reference: ([qkv]) => groupedAttentionRef(qkv, b, t, h, hkv, hd),
          seed: t + h,
          gradRtol: 2e-3,
          gradAtol: 2e-4,
          maxDifferences: 120,
        });
      }
    },
    { kernels },
  );
}

/** Forward values and qkv gradient of grouped attention of sizes [b, t, h, hkv, hd] (seeded data). */
async function groupedValuesAndGrad(
  gpu: Gpu,
  [b, t, h, hkv, hd]: number[],
  opts: Options,
): Promise<{ values: Float32Array; grad: Float32Array }> {
  const rand = rng(11);
  const data = randomArray(rand, b * t * (h + 2 * hkv) * hd, -2, 2);
  const w = randomArray(rand, b * t * h * hd);
  const qkv = param(gpu, data, [b, t, (h + 2 * hkv) * hd], "qkv");
  const wt = fromArray(gpu, w, [b, t, h * hd]);
  const out = attention(qkv, h, { ...opts, nKvHead: hkv });
  deepEqual(out.shape, [b, t, h * hd]);
  const values = await out.download();
  backward(out, wt);
  const grad = await qkv.grad!.download();
  for (const x of [qkv, out, wt]) x.dispose();
  return { values, grad };
}

for (const [label, opts, kernels] of GROUPED_VARIANTS.slice(0, 3)) {
  gpuTest(
    `grouped-query attention (${label}) agrees with the non-fused path, forward and backward`,
    async (gpu) => {
      for (const sizes of GROUPED) {
        const fused = await groupedValuesAndGrad(gpu, sizes, opts);
        const unfused = await groupedValuesAndGrad(gpu, sizes, { fused: false });
        assertClose(fused.values, unfused.values, { what: `forward ${sizes}`, atol: 1e-5 });
        assertClose(fused.grad, unfused.grad, { what: `gradient ${sizes}`, atol: 1e-5 });
      }
    },
    { kernels },
  );

  gpuTest(`attention (${label}) with nKvHead = nHead gives GPT-2's results bit for bit`, async (gpu) => {
    const sizes = [2, 33, 3, 3, 12];
    const mha = await groupedValuesAndGrad(gpu, sizes, opts);
    const rand = rng(11);
    const [b, t, h, , hd] = sizes;
    const data = randomArray(rand, b * t * 3 * h * hd, -2, 2);
    const w = randomArray(rand, b * t * h * hd);
    const gpt2 = await valuesAndGrad(gpu, data, w, [b, t, h * hd, h], opts);
    deepEqual(mha.values, gpt2.values);
    deepEqual(mha.grad, gpt2.grad);
  }, { kernels });
}

gpuTest("attention with nKvHead = nHead runs GPT-2's kernels, without a group loop", (gpu) => {
  const qkv = fromArray(gpu, new Float32Array(2 * 7 * 3 * 16), [2, 7, 3 * 16]);
  const s = attentionShape(qkv, 2, 2);
  deepEqual(s, attentionShape(qkv, 2));
  deepEqual(s, { b: 2, t: 7, h: 2, hd: 8, hkv: 2 });
  const plan = flashPlan(s, gpu.info.limits)!;
  for (
    const kernel of [
      attentionForwardKernel(s, "texture"),
      attentionBackwardKeyValueKernel(s, "storage"),
      flashForwardKernel(s, plan.forward),
      flashBackwardKeyValueKernel(s, plan.keyValue),
    ]
  ) {
    ok(!/kvh|HKV|\bG\b|_kv/.test(kernel.code + kernel.key), `${kernel.name} has no grouped code`);
  }
  qkv.dispose();
});

/** Bytes the tape saves for, and peak live bytes of, one fused attention forward and backward. */
async function attentionBytes(gpu: Gpu, [b, t, h, hkv, hd]: number[], opts: Options) {
  const width = (h + 2 * hkv) * hd;
  const qkv = fromArray(gpu, randomArray(rng(5), b * t * width), [b, t, width], {
    requiresGrad: true,
    category: "activations",
  });
  const wt = fromArray(gpu, randomArray(rng(6), b * t * h * hd), [b, t, h * hd]);
  gpu.memory.resetPeak();
  const before = gpu.memory.stats().liveTotal;
  const savedBefore = savedActivationBytes();
  const out = attention(qkv, h, { ...opts, nKvHead: hkv });
  const saved = savedActivationBytes() - savedBefore;
  backward(out, wt);
  await qkv.grad!.download();
  const peak = gpu.memory.stats().peakTotal - before;
  for (const x of [qkv, out, wt]) x.dispose();
  return { saved, peak };
}

for (const [label, opts, kernels] of GROUPED_VARIANTS.slice(1, 3)) {
  gpuTest(`grouped-query attention (${label}) keeps no repeated K or V`, async (gpu) => {
    const [b, t, h, hkv, hd] = [2, 33, 4, 1, 8];
    const grouped = await attentionBytes(gpu, [b, t, h, hkv, hd], opts);
    const mha = await attentionBytes(gpu, [b, t, h, h, hd], opts);
    // Saved: the packed qkv itself, the output and the log-sum-exp per query head, nothing else.
    equal(grouped.saved, 4 * (b * t * (h + 2 * hkv) * hd + b * t * h * hd + b * h * t));
    // K and V of the missing heads are absent from qkv, its texture copy (software) and dqkv; a copy
    // of K/V repeated per query head would give them back.
    const missing = 4 * b * t * 2 * (h - hkv) * hd;
    equal(mha.saved - grouped.saved, missing);
    ok(mha.peak - grouped.peak >= 2 * missing, `peak ${grouped.peak} bytes vs ${mha.peak} with H = Hkv`);
  }, { kernels });
}

Deno.test("the dK/dV pass splits a group whose loop passes the limit, and refuses one head past it", () => {
  const s: AttentionShape = { b: 1, t: 100, h: 8, hkv: 1, hd: 8 };
  const spans = keyValueKernels(s, (span) => attentionBackwardKeyValueKernel(s, "storage", span), 350);
  deepEqual(spans.map((k) => k.loops), [303, 303, 202]); // 3 heads of 101 iterations, then the last 2
  ok(/dqkv\[[^\]]*\] = dk0/.test(spans[0].code), "the first span writes");
  ok(spans.slice(1).every((k) => /dqkv\[[^\]]*\] \+= dk0/.test(k.code)), "later spans add");
  ok(spans[2].code.includes("for (var gh = 6u; gh < 8u; gh++)"), spans[2].code);
  const whole = keyValueKernels(s, (span) => attentionBackwardKeyValueKernel(s, "storage", span));
  deepEqual(whole.map((k) => k.loops), [8 * 101]);
  throws(
    () => keyValueKernels(s, (span) => attentionBackwardKeyValueKernel(s, "storage", span), 100),
    /T = 100 \(8 query heads, 1 k\/v heads\) runs 101 loop iterations per query head, past the 100/,
  );
  const plan = flashPlan(s, { maxComputeWorkgroupStorageSize: 16384 })!;
  const flash = keyValueKernels(s, (span) => flashBackwardKeyValueKernel(s, plan.keyValue, span), 40);
  ok(flash.length > 1 && flash.every((k) => k.loops <= 40), "flash spans within the limit");
});

gpuTest("grouped-query attention refuses heads that do not divide or do not fit qkv", (gpu) => {
  const x = fromArray(gpu, new Float32Array(2 * 3 * 64), [2, 3, 64]);
  throws(
    () => attention(x, 4, { nKvHead: 3 }),
    /4 query heads and 3 k\/v heads: the k\/v heads must be a positive divisor/,
  );
  throws(
    () => attention(x, 6, { nKvHead: 2 }),
    /qkv \[2, 3, 64\] must be \[B, T, \(H \+ 2·Hkv\)·hd\] with 6 query heads/,
  );
  x.dispose();
});

for (const [label, kernels] of [["storage reads", undefined], ["flash", "gpu"]] as const) {
  gpuTest(`the dK/dV pass (${label}) in spans of a group adds up to the whole group's pass`, async (gpu) => {
    const s: AttentionShape = { b: 2, t: 9, h: 6, hkv: 2, hd: 8 };
    const rand = rng(9);
    const rows = s.b * s.t;
    const qkv = fromArray(gpu, randomArray(rand, rows * (s.h + 2 * s.hkv) * s.hd), [
      rows,
      (s.h + 2 * s.hkv) * s.hd,
    ]);
    const dout = fromArray(gpu, randomArray(rand, rows * s.h * s.hd), [rows, s.h * s.hd]);
    const lse = fromArray(gpu, randomArray(rand, s.b * s.h * s.t, 1, 3), [s.b * s.h * s.t]);
    const dd = fromArray(gpu, randomArray(rand, s.b * s.h * s.t), [s.b * s.h * s.t]);
    const plan = flashPlan(s, gpu.info.limits)!;
    const make = (span?: GroupSpan) =>
      kernels
        ? flashBackwardKeyValueKernel(s, plan.keyValue, span)
        : attentionBackwardKeyValueKernel(s, "storage", span);
    const run = async (limit?: number) => {
      const dqkv = fromArray(gpu, new Float32Array(qkv.size), qkv.shape);
      const spans = keyValueKernels(s, make, limit);
      for (const k of spans) {
        gpu.dispatch(k, [qkv, dout, lse, dd, dqkv].map((t) => t.binding("test")));
      }
      const out = await dqkv.download();
      dqkv.dispose();
      return { spans: spans.length, out };
    };
    const whole = await run();
    const split = await run((make().loops * 2) / 3); // spans of 2 and 1 query heads
    deepEqual([whole.spans, split.spans], [1, 2]);
    ok(whole.out.some((x) => x !== 0), "the pass writes dK and dV");
    assertClose(split.out, whole.out, { what: "dK, dV", atol: 1e-6 });
    for (const t of [qkv, dout, lse, dd]) t.dispose();
  }, { kernels });
}
