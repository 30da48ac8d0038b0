/**
 * The process shards_kill_test.ts kills. `deno run shards_kill_child.ts <dir> <plan JSON>` writes a
 * small LLaMA's weights into `<dir>` as saveLlama does (writeSafetensorsLayout, then config.json by
 * writeFileAtomic), once per save of the plan, each a version of the values and a shard limit. It
 * needs no GPU, so a child starts in a tenth of a second. Every file operation is announced on stdout
 * as one JSON line `[n, op, ...paths]` before it runs; at operation `stopAt` the child announces
 * `"stopped"` and waits for its SIGKILL. `loop` repeats the plan until the child is killed.
 */
import type { LlamaConfig } from "../../core/nn/llama_config.ts";

/** The model saved: 2 layers, 19,776 bytes of f32 weights. */
export const CONFIG: LlamaConfig = {
  vocabSize: 32,
  blockSize: 16,
  nLayer: 2,
  nHead: 2,
  nKvHead: 1,
  nEmbd: 16,
  nInner: 24,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  tiedHead: false,
};

/** One save: the values' version and the largest shard in bytes (1e9: one file here). */
export type Save = { version: number; maxShardBytes: number };

/** What the child does. */
export interface Plan {
  saves: Save[];
  /**
   * Where to stop: before file operation number `stopAt` (counted from 0 over the whole plan; -1:
   * nowhere), or before the first whose announcement `op path…` matches the RegExp source `stopAt`.
   */
  stopAt: number | string;
  loop: boolean;
}

/**
 * Values of parameter `k` (in llamaLayout order, `n` elements) in `version`; versions differ in
 * every element, so a tensor tells which version it is.
 */
export function versionValues(version: number, k: number, n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => version * 8 + Math.sin(k * 101 + i));
}

/** Replaces Deno's file operations with ones that announce themselves, and stop at `stopAt`. */
function announceFileOps(dir: string, stopAt: number | string): void {
  const deno = Deno as unknown as Record<string, (...args: unknown[]) => unknown>;
  let n = 0;
  const rel = (p: string) => p === dir ? "." : p.startsWith(`${dir}/`) ? p.slice(dir.length + 1) : p;
  const announce = async (op: string, paths: string[]) => {
    const line = [op, ...paths.map(rel)];
    console.log(JSON.stringify([n, ...line]));
    const stop = typeof stopAt === "number" ? n === stopAt : new RegExp(stopAt).test(line.join(" "));
    n++;
    if (stop) {
      console.log(JSON.stringify("stopped"));
      setTimeout(() => Deno.exit(3), 60_000); // not killed: fail rather than carry on
      await new Promise(() => {});
    }
  };
  for (const op of ["mkdir", "writeFile", "writeTextFile", "rename", "remove"]) {
    const real = deno[op];
    deno[op] = async (...args: unknown[]) => {
      // A write's second argument is the data; a rename's is the second path.
      await announce(op, (op === "rename" ? args.slice(0, 2) : args.slice(0, 1)) as string[]);
      return await real(...args);
    };
  }
  const readDir = Deno.readDir;
  deno.readDir = (...args: unknown[]) => {
    const path = args[0] as string;
    return (async function* () {
      await announce("readDir", [path]);
      yield* readDir(path);
    })();
  };
}

if (import.meta.main) {
  const [dir, planText] = Deno.args;
  const plan: Plan = JSON.parse(planText);
  // Patched before the writers are imported, so one that keeps its own references to Deno's
  // functions still goes through these.
  announceFileOps(dir, plan.stopAt);
  const { writeSafetensorsLayout } = await import("../../core/io/hf.ts");
  const { llamaLayout } = await import("../../core/io/llama.ts");
  const { writeFileAtomic } = await import("../../core/io/safetensors.ts");
  const { encodeShardedSafetensors } = await import("../../core/io/shards.ts");
  const { llamaConfigToHF } = await import("../../core/nn/llama_config.ts");
  const tensors = (version: number) =>
    Object.fromEntries(
      llamaLayout(CONFIG).map(([name, shape], k) => {
        const data = versionValues(version, k, shape.reduce((a, b) => a * b, 1));
        return [name, { shape, data }];
      }),
    );
  const config = JSON.stringify({ ...llamaConfigToHF(CONFIG), torch_dtype: "float32" }, null, 2) + "\n";
  console.log(JSON.stringify("ready"));
  do {
    for (const s of plan.saves) {
      await writeSafetensorsLayout(dir, encodeShardedSafetensors(tensors(s.version), s.maxShardBytes));
      await writeFileAtomic(`${dir}/config.json`, config);
      console.log(JSON.stringify(["saved", s.version]));
    }
  } while (plan.loop);
}
