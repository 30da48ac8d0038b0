import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { NoAdapterError, requestGpu } from "../core/gpu.ts";
import { KernelCompileError } from "../kernels/cache.ts";
import { KernelLimitError } from "../kernels/kernel.ts";
import { isSoftwareAdapter, parseKernelFamily, resolveKernelFamily } from "../kernels/select.ts";
import { backward } from "../core/autograd.ts";
import { gelu } from "../core/ops/gelu.ts";
import { matmul } from "../core/ops/matmul.ts";
import { scale } from "../core/ops/elementwise.ts";
import { sum } from "../core/ops/reduce.ts";
import { empty, fromArray, tidy } from "../core/tensor.ts";
import { gpuTest, param } from "./helpers.ts";

gpuTest("the adapter report names the adapter and the device gets the adapter's real limits", async (gpu) => {
  const adapter = (await navigator.gpu.requestAdapter())!;
  ok(gpu.info.description.length > 0);
  equal(typeof gpu.info.fallback, "boolean");
  equal(typeof gpu.info.f16, "boolean");
  equal(gpu.info.limits.maxStorageBufferBindingSize, adapter.limits.maxStorageBufferBindingSize);
  equal(gpu.info.limits.maxBufferSize, adapter.limits.maxBufferSize);
  equal(gpu.device.limits.maxComputeWorkgroupStorageSize, adapter.limits.maxComputeWorkgroupStorageSize);
});

gpuTest("a WGSL error names the kernel and its sizes, and the step is dropped", async (gpu) => {
  const bad = {
    name: "broken_kernel",
    key: "n8_v2",
    loops: 0,
    code: "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }",
  };
  gpu.dispatch(bad, [], [1]);
  await rejects(gpu.submit(), (e: Error) => {
    ok(e instanceof KernelCompileError);
    ok(e.message.includes("kernel broken_kernel [n8_v2] failed to compile"), e.message);
    ok(e.message.includes("expected to be `f32`, but got `u32`"), e.message);
    return true;
  });
  // The device is still usable afterwards.
  const t = fromArray(gpu, [1, 2], [2]);
  deepEqual([...await scale(t, 3).download()], [3, 6]);
});

gpuTest("a kernel needing more than 65,535 loop iterations per invocation is refused, naming it", (gpu) => {
  const long = {
    name: "long_loop",
    key: "n70000",
    loops: 70000,
    code: "@compute @workgroup_size(1) fn main() { for (var i = 0u; i < 70000u; i++) {} }",
  };
  throws(() => gpu.dispatch(long, [], [1]), (e: Error) => {
    ok(e instanceof KernelLimitError);
    ok(e.message.includes("long_loop [n70000] would run 70000 loop iterations"), e.message);
    return true;
  });
  gpu.dispatch({ ...long, key: "n65535", loops: 65535 }, [], [1]);
});

Deno.test("LISA_KERNELS picks a family; auto follows the adapter; anything else is refused by name", () => {
  equal(parseKernelFamily(undefined), "auto");
  equal(parseKernelFamily(""), "auto");
  equal(parseKernelFamily("gpu"), "gpu");
  equal(parseKernelFamily("software"), "software");
  throws(() => parseKernelFamily("cuda"), /LISA_KERNELS=cuda: expected one of auto, gpu, software/);
  equal(resolveKernelFamily("auto", true), "software");
  equal(resolveKernelFamily("auto", false), "gpu");
  equal(resolveKernelFamily("gpu", true), "gpu");
  equal(resolveKernelFamily("software", false), "software");
  ok(isSoftwareAdapter("llvmpipe (LLVM 15.0.6, 256 bits)", false));
  ok(!isSoftwareAdapter("NVIDIA H200", false));
});

gpuTest("a device asked for the GPU kernels on any adapter runs them", (gpu) => {
  equal(gpu.kernels, "gpu");
  equal(gpu.info.kernels, "gpu");
}, { kernels: "gpu" });

gpuTest("a tensor beyond the binding limit is refused by the op, naming op, tensor and limit", (gpu) => {
  const limit = gpu.info.limits.maxStorageBufferBindingSize;
  const big = empty(gpu, [limit / 4 + 64], { name: "big_activation" });
  throws(
    () => gelu(big),
    new RegExp(
      `gelu: big_activation \\[${limit / 4 + 64}\\] is ${
        limit + 256
      } bytes, beyond this device's maxStorageBufferBindingSize of ${limit} bytes`,
    ),
  );
  big.dispose();
});

gpuTest("a training step is one submit, and readback waits for nothing until it is asked", async (gpu) => {
  await gpu.submit();
  const w = param(gpu, Float32Array.from({ length: 12 }, (_, i) => i / 10), [3, 4], "w");
  const x = fromArray(gpu, Float32Array.from({ length: 6 }, (_, i) => i), [2, 3]);
  const before = gpu.submits;
  const loss = tidy(() => sum(gelu(matmul(x, w))));
  backward(loss);
  const value = loss.read();
  ok(gpu.pendingDispatches > 5);
  equal(gpu.submits, before);
  await gpu.submit();
  equal(gpu.submits, before + 1);
  ok(Number.isFinite((await value)[0]));
  for (const t of [w, x, loss]) t.dispose();
});

gpuTest("an upload recorded after a kernel does not change what that kernel read", async (gpu) => {
  const x = fromArray(gpu, [1, 2], [2]);
  await gpu.submit();
  const y = scale(x, 2);
  x.upload([10, 20]);
  const z = scale(x, 1);
  await gpu.submit();
  deepEqual([...await y.download()], [2, 4]);
  deepEqual([...await z.download()], [10, 20]);
});

Deno.test({
  name: "with no adapter the error says how to get one",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const gpuObj = navigator.gpu;
    const original = gpuObj.requestAdapter;
    Object.defineProperty(gpuObj, "requestAdapter", {
      value: () => Promise.resolve(null),
      configurable: true,
    });
    try {
      await rejects(requestGpu(), (e: Error) => {
        ok(e instanceof NoAdapterError);
        ok(e.message.includes("apt-get install -y mesa-vulkan-drivers libvulkan1"), e.message);
        return true;
      });
    } finally {
      Object.defineProperty(gpuObj, "requestAdapter", { value: original, configurable: true });
    }
  },
});
