/** The host: the core reads and writes only through it, so it runs with no file system (a browser). */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import {
  type FileHost,
  getHost,
  isNotFound,
  memoryHost,
  NotFoundError,
  readFileOrNull,
  setHost,
} from "../core/host.ts";
import {
  type CheckpointPhase,
  findCheckpoint,
  loadTrainerState,
  saveCheckpoint,
} from "../core/io/checkpoint.ts";
import { loadModel, saveModel } from "../core/io/models.ts";
import { saveGPT2 } from "../core/io/hf.ts";
import { Safetensors } from "../core/io/safetensors.ts";
import { GPT } from "../core/nn/gpt.ts";
import { Llama } from "../core/nn/llama.ts";
import type { LanguageModel } from "../core/nn/model.ts";
import { AdamW } from "../core/optim/adamw.ts";
import { fromArray } from "../core/tensor.ts";
import { testGpu } from "./helpers.ts";

const root = new URL("../", import.meta.url).pathname;

/** Runs `fn` with `host` as the core's host, then puts the previous one back. */
async function withHost<T>(host: FileHost, fn: () => Promise<T>): Promise<T> {
  const previous = setHost(host);
  try {
    return await fn();
  } finally {
    setHost(previous);
  }
}

/** A test that may neither read nor write files: anything the core does with files goes through its host. */
function noFileSystemTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name,
    permissions: { read: false, write: false },
    sanitizeOps: false,
    sanitizeResources: false,
    fn,
  });
}

async function sameParameters(a: LanguageModel, b: LanguageModel): Promise<void> {
  const pa = a.namedParameters(), pb = b.namedParameters();
  deepEqual(pb.map(([n]) => n), pa.map(([n]) => n));
  for (let i = 0; i < pa.length; i++) {
    deepEqual(await pb[i][1].download(), await pa[i][1].download(), pa[i][0]);
  }
}

Deno.test("under Deno the default host is Deno's file system", async () => {
  const host = getHost();
  const bytes = await host.readFile(`${root}deno.json`);
  deepEqual(bytes, await Deno.readFile(`${root}deno.json`));
  ok((await host.readDir(root)).some((e) => e.name === "core" && e.isDirectory));
  equal(host.pid, Deno.pid);
  await rejects(host.readFile(`${root}no-such-file`), (e) => isNotFound(e));
  equal(await readFileOrNull(`${root}no-such-file`), null);
});

Deno.test("a memory host keeps a folder tree: mkdir, write, rename, remove, list", async () => {
  const host = memoryHost({ files: { "a/b/c.txt": "hi" }, env: { LISA_KERNELS: "gpu" } });
  equal(new TextDecoder().decode(await host.readFile("./a/b/../b/c.txt")), "hi");
  deepEqual(await host.readDir("a"), [{ name: "b", isFile: false, isDirectory: true }]);
  await rejects(host.writeFile("x/y.bin", new Uint8Array(1)), NotFoundError);
  await rejects(host.mkdir("x/y"), NotFoundError);
  await host.mkdir("x/y", { recursive: true });
  await host.mkdir("x/y", { recursive: true });
  await rejects(host.mkdir("x/y"), /File exists/);
  const data = new Uint8Array([1, 2, 3]);
  await host.writeFile("x/y/d.bin", data);
  data[0] = 9; // the host keeps what was written, not the caller's array
  deepEqual(await host.readFile("x/y/d.bin"), new Uint8Array([1, 2, 3]));
  // A folder moves with everything in it, onto a new name or an empty folder, never a full one.
  await rejects(host.rename("x", "a"), /Directory not empty/);
  await host.mkdir("z");
  await host.rename("x", "z");
  deepEqual(await host.stat("z/y/d.bin"), { isFile: true, isDirectory: false });
  await rejects(host.stat("x"), NotFoundError);
  await rejects(host.remove("z"), /Directory not empty/);
  await host.remove("z", { recursive: true });
  await rejects(host.readDir("z"), NotFoundError);
  deepEqual((await host.readDir(".")).map((e) => e.name), ["a"]);
  equal(host.env("LISA_KERNELS"), "gpu");
  host.setEnv("LISA_KERNELS", "software");
  equal(host.env("LISA_KERNELS"), "software");
});

noFileSystemTest(
  "GPT-2 and LLaMA models save and load through a memory host, with no file system",
  async () => {
    const gpu = await testGpu();
    const gpt = new GPT(gpu, { vocabSize: 37, blockSize: 8, nLayer: 1, nHead: 2, nEmbd: 8 }, { seed: 3 });
    const llama = new Llama(gpu, {
      vocabSize: 32,
      blockSize: 16,
      nLayer: 1,
      nHead: 2,
      nKvHead: 1,
      nEmbd: 16,
      nInner: 24,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      tiedHead: false,
    }, { seed: 1 });
    const host = memoryHost();
    await withHost(host, async () => {
      for (const [dir, model] of [["models/gpt", gpt], ["/models/llama", llama]] as const) {
        await saveModel(model, dir);
        const names = (await host.readDir(dir)).map((e) => e.name).sort();
        deepEqual(names, ["config.json", "model.safetensors"], dir);
        new Safetensors(await host.readFile(`${dir}/model.safetensors`), dir); // whole and parseable
        const { model: back, source } = await loadModel(gpu, dir);
        await sameParameters(model, back);
        // Written back as it was loaded: the same files, the same bytes.
        await saveModel(back, `${dir}-again`, { source });
        deepEqual(
          await host.readFile(`${dir}-again/model.safetensors`),
          await host.readFile(`${dir}/model.safetensors`),
        );
        back.dispose();
      }
      await rejects(loadModel(gpu, "models/none"), /models\/none\/config.json/);
    });
    gpt.dispose();
    llama.dispose();
  },
);

noFileSystemTest(
  "a checkpoint write stopped at each phase leaves a whole checkpoint in a memory host",
  async () => {
    const gpu = await testGpu();
    const model = new GPT(gpu, { vocabSize: 32, blockSize: 16, nLayer: 1, nHead: 2, nEmbd: 16 }, { seed: 1 });
    const optimizer = new AdamW(gpu);
    const [name, p] = model.namedParameters()[0];
    p.grad = fromArray(gpu, new Float32Array(p.size).fill(0.5), p.shape);
    optimizer.step([[name, p]], 1e-2);
    const host = memoryHost();
    const phases: CheckpointPhase[] = ["weights", "optimizer", "trainer", "swap-out", "swap-in", "cleanup"];
    const save = (step: number, stopAt?: CheckpointPhase) =>
      saveCheckpoint("run/checkpoint", {
        weights: (d) => saveGPT2(model, d),
        optimizer,
        state: { step, batcher: null, method: null, extra: {} },
      }, (phase) => {
        if (phase === stopAt) throw new Error(`stopped at ${phase}`);
      });
    await withHost(host, async () => {
      await host.mkdir("run");
      await save(1);
      for (const [i, phase] of phases.entries()) {
        await rejects(save(2 + i, phase), /stopped at/);
        equal(await findCheckpoint("run/checkpoint"), "run/checkpoint", phase);
        const restored = new AdamW(gpu);
        equal(
          (await loadTrainerState("run/checkpoint", restored)).step,
          phase === "cleanup" ? 2 + i : 1,
          phase,
        );
        equal(restored.state(name)!.step, 1);
        restored.dispose();
        deepEqual((await host.readDir("run")).map((e) => e.name), ["checkpoint"], phase);
      }
    });
    optimizer.dispose();
    model.dispose();
  },
);

Deno.test("core/ and kernels/ use no Deno API and import no node: module", async () => {
  const offenders: string[] = [];
  const scan = async (dir: string): Promise<void> => {
    for await (const e of Deno.readDir(dir)) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory) await scan(path);
      else if (e.name.endsWith(".ts")) {
        (await Deno.readTextFile(path)).split("\n").forEach((line, i) => {
          if (/\bDeno\.|from "node:/.test(line)) {
            offenders.push(`${path.slice(root.length)}:${i + 1}: ${line.trim()}`);
          }
        });
      }
    }
  };
  await scan(`${root}core`);
  await scan(`${root}kernels`);
  deepEqual(offenders, [], "go through core/host.ts instead");
});
