/**
 * GPU faults say what happened: memory that cannot be had names the tensor, its category and size
 * and what is live; a lost device stops every call instead of hanging; a rejected step names its
 * kernel and its reads never resolve with stale numbers. Each fault gets its own device.
 */
import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import {
  GpuLostError,
  GpuStepError,
  isGpuFault,
  parseDebugFlag,
  parseMemoryLimit,
  requestGpu,
} from "../core/gpu.ts";
import { formatBytes, GpuMemoryError, sizeClass } from "../core/memory.ts";
import { scale } from "../core/ops/elementwise.ts";
import { empty, fromArray } from "../core/tensor.ts";
import { gpuTest } from "./helpers.ts";

/** Deno.test for a test that makes (and may lose) its own device. */
function faultTest(name: string, fn: () => Promise<void> | void): void {
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });
}

const KiB = 1024;

/** A kernel that writes element 0 of a 64-float storage array: any smaller binding is invalid. */
const needs256Bytes = {
  name: "needs_256_bytes",
  key: "n64",
  loops: 0,
  code: "@group(0) @binding(0) var<storage, read_write> a: array<f32, 64>;\n" +
    "@compute @workgroup_size(1) fn main() { a[0] = 1.0; }",
};

gpuTest(
  "a tensor beyond the device's maxBufferSize is refused naming it, its category, size, the limit and what is live",
  (gpu) => {
    const max = gpu.info.limits.maxBufferSize;
    const before = gpu.memory.stats();
    const elements = Math.floor(max / 4) + 1;
    throws(() => empty(gpu, [elements], { name: "huge_embedding", category: "weights" }), (e: Error) => {
      ok(e instanceof GpuMemoryError, String(e));
      ok(isGpuFault(e));
      equal(e.limit, "maxBufferSize");
      deepEqual(e.allocation, { label: "huge_embedding", category: "weights", bytes: elements * 4 });
      const m = e.message;
      ok(
        m.includes(`huge_embedding (weights) needs ${formatBytes(elements * 4)} (${elements * 4} bytes)`),
        m,
      );
      ok(m.includes(`beyond this device's maxBufferSize of ${formatBytes(max)} (${max} bytes)`), m);
      ok(/live: weights \S+( \S+)?, grads \S+( \S+)?, optimizer .*, activations .*, workspace /.test(m), m);
      ok(!m.includes("\n"), "one line");
      return true;
    });
    deepEqual(gpu.memory.stats().live, before.live, "nothing was allocated");
  },
);

faultTest("with a memory limit, an allocation past it is refused naming it and what is live", async () => {
  const gpu = await requestGpu({ memoryLimit: 1024 * KiB });
  equal(gpu.memory.limit, 1024 * KiB);
  const w = empty(gpu, [128 * KiB], { name: "wte", category: "weights" }); // 512 KiB
  const a = empty(gpu, [64 * KiB], { name: "h.0.mlp.act", category: "activations" }); // 256 KiB
  throws(() => empty(gpu, [128 * KiB], { name: "logits", category: "activations" }), (e: Error) => {
    ok(e instanceof GpuMemoryError, String(e));
    equal(e.limit, "memoryLimit");
    equal(e.allocation?.label, "logits");
    equal(e.live.weights, 512 * KiB);
    equal(e.live.activations, 256 * KiB);
    equal(
      e.message,
      "memory: logits (activations) needs 512.0 KiB (524288 bytes), which would take the GPU memory in use " +
        "to 1.3 MiB, over the memory limit of 1.0 MiB (1048576 bytes); live: weights 512.0 KiB, grads 0, " +
        "optimizer 0, activations 256.0 KiB, workspace 0; held 768.0 KiB of a 1.0 MiB limit, 0 of it pooled free",
    );
    return true;
  });
  equal(gpu.memory.stats().allocated, 768 * KiB, "the refused request holds nothing");
  for (const t of [w, a]) t.dispose();
});

faultTest(
  "under a memory limit, freed buffers are reused, and released when a new size needs the room",
  async () => {
    const gpu = await requestGpu({ memoryLimit: 1024 * KiB });
    const w = empty(gpu, [128 * KiB], { name: "w", category: "weights" }); // 512 KiB
    const a = empty(gpu, [64 * KiB], { name: "a" }); // 256 KiB
    const b = empty(gpu, [32 * KiB], { name: "b" }); // 128 KiB
    a.dispose();
    b.dispose();
    let s = gpu.memory.stats();
    equal(s.allocated, 512 * KiB);
    equal(s.reserved, 384 * KiB);
    // The same size comes back from the pool: the memory held does not grow.
    const again = empty(gpu, [64 * KiB], { name: "again" });
    s = gpu.memory.stats();
    equal(s.allocated + s.reserved, 896 * KiB);
    again.dispose();
    // A 512 KiB buffer does not fit beside 384 KiB pooled: the pool gives them up, largest first.
    const c = empty(gpu, [96 * KiB], { name: "c" }); // 384 KiB asked, 512 KiB size class
    s = gpu.memory.stats();
    equal(s.allocated, 512 * KiB + sizeClass(384 * KiB));
    equal(s.reserved, 0);
    ok(s.allocated + s.reserved <= 1024 * KiB);
    // Live memory alone over the limit is refused, whatever the pool holds.
    throws(() => empty(gpu, [1], { name: "one_more" }), /one_more \(activations\) needs 4 B \(4 bytes\)/);
    for (const t of [w, c]) t.dispose();
  },
);

faultTest(
  "a pooled buffer released for room mid-step is destroyed only after the step is submitted",
  async () => {
    const gpu = await requestGpu({ memoryLimit: 1028 * KiB });
    const x = fromArray(gpu, new Float32Array(64 * KiB).fill(1), [64 * KiB], { name: "x" }); // 256 KiB
    const y = scale(x, 2); // 256 KiB
    const z = scale(y, 3);
    y.dispose(); // back to the pool, yet bound by the recorded scale(y, 3)
    // 512 KiB fits only if the pooled 256 KiB goes; the recorded step still uses it.
    const big = empty(gpu, [128 * KiB], { name: "big" });
    equal(gpu.memory.stats().reserved, 0);
    big.fill(0);
    const [head, tail] = [z.rows(0, 4), z.rows(64 * KiB - 4, 64 * KiB)];
    const reads = [head.read(), tail.read()];
    await gpu.submit();
    deepEqual((await Promise.all(reads)).map((v) => [...v]), [[6, 6, 6, 6], [6, 6, 6, 6]]);
    for (const t of [x, z, big, head, tail]) t.dispose();
  },
);

Deno.test("LISA_MEMORY_LIMIT takes bytes or KiB/MiB/GiB; LISA_GPU_DEBUG takes 1 or 0; anything else is refused", () => {
  equal(parseMemoryLimit(undefined), undefined);
  equal(parseMemoryLimit(""), undefined);
  equal(parseMemoryLimit("1048576"), 1048576);
  equal(parseMemoryLimit("512MiB"), 512 * 2 ** 20);
  equal(parseMemoryLimit("1.5 GiB"), 1.5 * 2 ** 30);
  equal(parseMemoryLimit("6gib"), 6 * 2 ** 30);
  throws(() => parseMemoryLimit("6GB"), /LISA_MEMORY_LIMIT=6GB: expected .* KiB, MiB or GiB/);
  throws(() => parseMemoryLimit("0"), /LISA_MEMORY_LIMIT=0/);
  throws(() => parseMemoryLimit("lots"), /LISA_MEMORY_LIMIT=lots/);
  equal(parseDebugFlag(undefined), false);
  equal(parseDebugFlag("0"), false);
  equal(parseDebugFlag("1"), true);
  equal(parseDebugFlag("true"), true);
  throws(() => parseDebugFlag("yes please"), /LISA_GPU_DEBUG=yes please: expected 1 or 0/);
});

faultTest("LISA_MEMORY_LIMIT and LISA_GPU_DEBUG reach the device when no option is given", async () => {
  Deno.env.set("LISA_MEMORY_LIMIT", "3MiB");
  Deno.env.set("LISA_GPU_DEBUG", "1");
  try {
    const gpu = await requestGpu();
    equal(gpu.memory.limit, 3 * 2 ** 20);
    equal(gpu.debug, true);
    const explicit = await requestGpu({ memoryLimit: 4096, debug: false });
    equal(explicit.memory.limit, 4096);
    equal(explicit.debug, false);
  } finally {
    Deno.env.delete("LISA_MEMORY_LIMIT");
    Deno.env.delete("LISA_GPU_DEBUG");
  }
  await rejects(
    requestGpu({ memoryLimit: -1 }),
    /memoryLimit must be a positive whole number of bytes, got -1/,
  );
});

/**
 * Makes `device` report out-of-memory from the next out-of-memory error scope popped, as a driver
 * does when it cannot back a buffer: lavapipe would have to exhaust the machine's RAM to do it.
 */
function failNextOutOfMemoryScope(device: GPUDevice): void {
  const filters: GPUErrorFilter[] = [];
  const push = device.pushErrorScope.bind(device);
  const pop = device.popErrorScope.bind(device);
  let armed = true;
  device.pushErrorScope = (filter) => {
    filters.push(filter);
    push(filter);
  };
  device.popErrorScope = () => {
    const filter = filters.pop();
    const real = pop();
    if (!(armed && filter === "out-of-memory")) return real;
    armed = false;
    return real.then(() => new GPUOutOfMemoryError("Not enough memory left"));
  };
}

faultTest(
  "a buffer the device cannot back fails the step, naming it, what the step created, and what is live",
  async () => {
    const gpu = await requestGpu();
    const w = fromArray(gpu, new Float32Array(1024), [1024], { name: "wte", category: "weights" });
    await gpu.submit();
    const x = empty(gpu, [256], { name: "small_activation" });
    failNextOutOfMemoryScope(gpu.device);
    const big = empty(gpu, [64 * KiB], { name: "big_activation" });
    const y = scale(x, 2);
    const pending = rejects(y.read(), GpuMemoryError, "the dropped step's read rejects");
    await rejects(gpu.submit(), (e: Error) => {
      ok(e instanceof GpuMemoryError, String(e));
      equal(e.limit, "device");
      equal(e.allocation?.label, "big_activation");
      deepEqual(e.created.map((a) => a.label).slice(0, 2), ["big_activation", "small_activation"]);
      const m = e.message;
      ok(
        m.startsWith(
          "GPU out of memory creating big_activation (activations, 256.0 KiB): Not enough memory left",
        ),
        m,
      );
      ok(
        m.includes(
          "created since the previous submit: big_activation (activations) 256.0 KiB, small_activation",
        ),
        m,
      );
      ok(
        m.includes("live: weights 4.0 KiB, grads 0, optimizer 0, activations 258.0 KiB, workspace 1.0 KiB"),
        m,
      );
      return true;
    });
    await pending;
    for (const t of [x, big, y]) t.dispose();
    // The next step runs; the buffer that got no memory was not pooled for reuse.
    deepEqual([...await scale(fromArray(gpu, [1, 2], [2]), 3).download()], [3, 6]);
    w.dispose();
  },
);

faultTest(
  "the device running out of memory while running a step names the step and what is live",
  async () => {
    const gpu = await requestGpu();
    const x = fromArray(gpu, [1, 2, 3, 4], [4], { name: "x" });
    const first = scale(x, 2);
    await first.download();
    first.dispose();
    // The next step's output and readback buffers come from the pool, so the only out-of-memory
    // scope popped is the step's own.
    failNextOutOfMemoryScope(gpu.device);
    const y = scale(x, 2);
    await rejects(y.download(), (e: Error) => {
      ok(e instanceof GpuMemoryError, String(e));
      equal(e.allocation, null);
      ok(
        /^GPU out of memory running a step of 1 dispatches \(scale\S*\): Not enough memory left; created since the previous submit: nothing; /
          .test(e.message),
        e.message,
      );
      ok(
        e.message.includes("; live: weights 0, grads 0, optimizer 0, activations 32 B, workspace 16 B"),
        e.message,
      );
      return true;
    });
  },
);

faultTest(
  "a lost device stops every submit, read, allocation and wait with the reason, and nothing hangs",
  async () => {
    const gpu = await requestGpu();
    const x = fromArray(gpu, [1, 2, 3, 4], [4], { name: "x" });
    const lost = (e: Error) => {
      ok(e instanceof GpuLostError, String(e));
      ok(isGpuFault(e));
      equal(e.reason, "destroyed");
      ok(e.message.startsWith("GPU device lost (destroyed: "), e.message);
      ok(e.message.endsWith("restart from the last checkpoint"), e.message);
      return true;
    };
    // A read already submitted settles: with its numbers if the GPU finished it first, else lost.
    const submitted = scale(x, 2).read().then((v) => deepEqual([...v], [2, 4, 6, 8]), (e) => lost(e));
    await gpu.submit();
    const recorded = rejects(scale(x, 3).read(), lost, "a read of a step never submitted rejects");
    gpu.device.destroy();
    await gpu.device.lost;
    await submitted;
    await recorded;
    await rejects(gpu.submit(), lost);
    await rejects(gpu.idle(), lost);
    await rejects(x.download(), lost);
    throws(() => empty(gpu, [4], { name: "after_loss" }), lost);
    throws(() => x.upload([0, 0, 0, 0]), lost);
    throws(() => gpu.dispatch(needs256Bytes, [x.binding("k")], [1]), lost);
    deepEqual(gpu.lost?.reason, "destroyed");
  },
);

faultTest(
  "in debug mode a dispatch the device rejects is named exactly, and its step's reads reject",
  async () => {
    const gpu = await requestGpu({ debug: true });
    const x = fromArray(gpu, [1, 2, 3, 4], [4], { name: "x" });
    const readback = gpu.memory.alloc(256, "workspace", "host_copy", "readback");
    for (
      const [binding, expected] of [
        [x.binding("needs_256_bytes"), /Binding size 16 .* is less than minimum 256/],
        [{ buffer: readback.buffer }, /do not contain required usage flags .*STORAGE/],
      ] as const
    ) {
      const before = scale(x, 2);
      gpu.dispatch(needs256Bytes, [binding], [1]);
      const after = scale(x, 3);
      const pending = rejects(after.read(), GpuStepError, "never the stale or zero contents");
      await rejects(gpu.submit(), (e: Error) => {
        ok(e instanceof GpuStepError, String(e));
        equal(e.kernel, "needs_256_bytes[n64]");
        deepEqual(e.kernels.map((k) => k.split("[")[0]), ["scale", "needs_256_bytes", "scale"]);
        ok(
          e.message.startsWith(
            "GPU rejected kernel needs_256_bytes[n64] (dispatch 2 of a step of 3 dispatches",
          ),
          e.message,
        );
        ok(expected.test(e.message), e.message);
        return true;
      });
      await pending;
      for (const t of [before, after]) t.dispose();
    }
    // The device is still usable: the next valid step runs and reads back.
    deepEqual([...await scale(x, 5).download()], [5, 10, 15, 20]);
    gpu.memory.free(readback);
  },
);

faultTest(
  "without debug mode a rejected step lists its kernels and says how to name the failing one",
  async () => {
    const gpu = await requestGpu({ debug: false });
    const x = fromArray(gpu, [1, 2, 3, 4], [4], { name: "x" });
    const y = scale(x, 2);
    gpu.dispatch(needs256Bytes, [x.binding("needs_256_bytes")], [1]);
    await rejects(y.download(), (e: Error) => {
      ok(e instanceof GpuStepError, String(e));
      equal(e.kernel, null);
      ok(
        /^GPU rejected a step of 2 dispatches \(scale\S*, needs_256_bytes\[n64\]\): /.test(e.message),
        e.message,
      );
      ok(
        e.message.endsWith("rerun with LISA_GPU_DEBUG=1 (or requestGpu({ debug: true })) to name the kernel"),
        e.message,
      );
      return true;
    });
    deepEqual([...await scale(x, 5).download()], [5, 10, 15, 20]);
  },
);
