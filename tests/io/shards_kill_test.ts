/**
 * Kill tests of `writeSafetensorsLayout`, the weight writer of saveLlama and saveGPT2. A child process
 * (shards_kill_child.ts) writing new weights over old ones is killed with SIGKILL before each of its
 * file operations in turn, for every switch of layout (shards with the same names, regrouped shards,
 * sharded ↔ one file); after two kills in a row; and at random moments while it saves in a loop. Each
 * time the folder must load whole through readCheckpointTensors and loadModel, every tensor from the
 * last finished save or every tensor from the one killed, and the next save must leave only
 * config.json and its own weight files.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { childEnv } from "../../experiments/child.ts";
import type { Gpu } from "../../core/gpu.ts";
import { downloadParameters, readCheckpointTensors } from "../../core/io/hf.ts";
import { llamaLayout, saveLlama } from "../../core/io/llama.ts";
import { loadModel } from "../../core/io/models.ts";
import { INDEX_FILE, SINGLE_FILE } from "../../core/io/shards.ts";
import { Llama } from "../../core/nn/llama.ts";
import { gpuTest, rng, taskFlags } from "../helpers.ts";
import { CONFIG, type Plan, type Save, versionValues } from "./shards_kill_child.ts";

const CHILD = new URL("./shards_kill_child.ts", import.meta.url).pathname;
const THREE = 7000; // bytes per shard: model-0000k-of-00003
const TWO = 11000; // model-0000k-of-00002
const ONE = 1e9; // model.safetensors (Infinity would not survive JSON)
const VERSIONS = [0, 1, 2, 3, 4, 5];

/** The weight files a save at `maxShardBytes` leaves. */
function weightFiles(maxShardBytes: number): string[] {
  const n = maxShardBytes === THREE ? 3 : maxShardBytes === TWO ? 2 : 1;
  if (n === 1) return [SINGLE_FILE];
  return [INDEX_FILE, ...Array.from({ length: n }, (_, i) => `model-0000${i + 1}-of-0000${n}.safetensors`)];
}

const layoutName = (s: Save) =>
  s.maxShardBytes === ONE ? "one file" : `${weightFiles(s.maxShardBytes).length - 1} shards`;

/** A Llama of CONFIG holding `version`'s values. */
function versionModel(gpu: Gpu, version: number): Llama {
  const model = new Llama(gpu, CONFIG, { seed: 1 });
  model.namedParameters().forEach(([, t], k) => t.upload(versionValues(version, k, t.size)));
  return model;
}

/** Lines of a child's stdout, each parsed as JSON, as they come. */
async function* lines(stdout: ReadableStream<Uint8Array>): AsyncGenerator<unknown> {
  let rest = "";
  for await (const text of stdout.pipeThrough(new TextDecoderStream())) {
    const parts = (rest + text).split("\n");
    rest = parts.pop()!;
    for (const line of parts) yield JSON.parse(line);
  }
}

/** Starts the child on `dir` with `plan`. */
async function spawnChild(dir: string, plan: Plan): Promise<Deno.ChildProcess> {
  return new Deno.Command("deno", {
    args: ["run", ...await taskFlags("pretrain"), CHILD, dir, JSON.stringify(plan)],
    clearEnv: true,
    env: childEnv(),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Waits for a child's end; throws with its stderr unless it ended by SIGKILL or succeeded. */
async function ended(child: Deno.ChildProcess): Promise<"killed" | "finished"> {
  const [s, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
  if (s.signal === "SIGKILL") return "killed";
  if (!s.success) throw new Error(`shards_kill_child.ts failed (code ${s.code}):\n${err}`);
  return "finished";
}

/**
 * Runs the child's save of `save` on `dir`, killed before the file operation `stopAt` selects
 * (see Plan); returns that operation as the child announced it, or null when it finished first.
 */
async function killBefore(dir: string, save: Save, stopAt: number | string): Promise<string | null> {
  const child = await spawnChild(dir, { saves: [save], stopAt, loop: false });
  let last: unknown = null;
  for await (const line of lines(child.stdout)) {
    if (line === "stopped") {
      child.kill("SIGKILL");
      break;
    }
    last = line;
  }
  return (await ended(child)) === "killed" ? (last as unknown[]).join(" ") : null;
}

/**
 * The version `dir` holds, whole: read by readCheckpointTensors and by loadModel, every tensor of
 * that one version; throws otherwise.
 */
async function wholeVersion(gpu: Gpu, dir: string): Promise<number> {
  const { tensors } = await readCheckpointTensors(dir);
  const layout = llamaLayout(CONFIG);
  deepEqual(tensors.names().sort(), layout.map(([n]) => n).sort(), "tensor names");
  const versionOf = (k: number, data: Float32Array) =>
    VERSIONS.find((v) => versionValues(v, k, data.length).every((x, i) => x === data[i])) ?? -1;
  const found = layout.map(([name], k) => versionOf(k, tensors.getF32(name)));
  const v = found[0];
  ok(v >= 0 && found.every((x) => x === v), `tensors of versions ${found.join(",")} (-1: none)`);
  const { model } = await loadModel(gpu, dir);
  try {
    const loaded = [...(await downloadParameters(model)).entries()];
    loaded.forEach(([name, t], k) =>
      deepEqual(t.data, versionValues(v, k, t.data.length), `loadModel: ${name}`)
    );
  } finally {
    model.dispose();
  }
  return v;
}

const listing = async (dir: string) => (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();

/**
 * What a kill left in `dir`: the version it holds whole (null: none), whether that is one of
 * `allowed`, and a line saying which version (or why none) and the files there.
 */
async function afterKill(
  gpu: Gpu,
  dir: string,
  allowed: number[],
): Promise<{ version: number | null; ok: boolean; text: string }> {
  const files = (await listing(dir)).join(", ");
  try {
    const version = await wholeVersion(gpu, dir);
    const ok = allowed.includes(version);
    const text = `${ok ? "" : `version ${allowed.join(" or ")} expected, found `}v${version} [${files}]`;
    return { version, ok, text };
  } catch (e) {
    return { version: null, ok: false, text: `${(e as Error).message.split("\n")[0]} [${files}]` };
  }
}

/** Saves `save` with saveLlama in this process; returns the files it left in `dir` beyond its own. */
async function cleanSave(gpu: Gpu, dir: string, save: Save): Promise<string[]> {
  const model = versionModel(gpu, save.version);
  try {
    await saveLlama(model, dir, { maxShardBytes: save.maxShardBytes });
  } finally {
    model.dispose();
  }
  equal(await wholeVersion(gpu, dir), save.version);
  const own = ["config.json", ...weightFiles(save.maxShardBytes)];
  return (await listing(dir)).filter((f) => !own.includes(f));
}

gpuTest(
  "a save SIGKILLed before any one of its file operations leaves the old weights or the new, whole; the next save cleans up",
  async (gpu) => {
    const root = await Deno.makeTempDir({ prefix: "lisa-shards-kill-" }); // outside the project
    try {
      const switches: [Save, Save][] = [
        [{ version: 0, maxShardBytes: THREE }, { version: 1, maxShardBytes: THREE }],
        [{ version: 0, maxShardBytes: THREE }, { version: 1, maxShardBytes: TWO }],
        [{ version: 0, maxShardBytes: THREE }, { version: 1, maxShardBytes: ONE }],
        [{ version: 0, maxShardBytes: ONE }, { version: 1, maxShardBytes: THREE }],
        [{ version: 0, maxShardBytes: ONE }, { version: 1, maxShardBytes: ONE }],
      ];
      const failures: string[] = [];
      const summary: string[] = [];
      let kills = 0;
      // One switch at a time: they share one Gpu, and a Gpu records one step at a time (two tasks
      // reading back through it at once interleave their steps).
      for (const [s, [from, to]] of switches.entries()) {
        const what = `${layoutName(from)} → ${layoutName(to)}`;
        const template = `${root}/from-${s}`;
        deepEqual(await cleanSave(gpu, template, from), []);
        const held = [0, 0];
        for (let stopAt = 0;; stopAt++) {
          const dir = `${root}/switch-${s}-${stopAt}`;
          await Deno.mkdir(dir);
          for (const f of await listing(template)) await Deno.copyFile(`${template}/${f}`, `${dir}/${f}`);
          const op = await killBefore(dir, to, stopAt);
          const when = op === null ? "not killed (it finished)" : `killed before ${op}`;
          const state = await afterKill(gpu, dir, [from.version, to.version]);
          if (state.ok) held[state.version === from.version ? 0 : 1]++;
          else failures.push(`${what}, ${when}: ${state.text}`);
          const left = await cleanSave(gpu, dir, to);
          if (left.length) failures.push(`${what}, ${when}: the next save left ${left.join(", ")}`);
          await Deno.remove(dir, { recursive: true });
          if (op === null) {
            // Fewer would mean the writers no longer reach the file system through Deno.*, where the
            // child stops them, and nothing here was tested.
            ok(stopAt >= 8, `${what}: the child stopped before only ${stopAt} file operations`);
            break;
          }
          kills++;
        }
        summary.push(`${what}: old weights ${held[0]}, new ${held[1]}`);
      }
      console.log(`${kills} kills. ${summary.join("; ")}`);
      ok(failures.length === 0, `${failures.length} of ${kills} kills:\n${failures.join("\n")}`);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

gpuTest(
  "two saves SIGKILLed in a row never leave weights older than the last whole save",
  async (gpu) => {
    const dir = await Deno.makeTempDir({ prefix: "lisa-shards-kill-" }); // outside the project
    try {
      deepEqual(await cleanSave(gpu, dir, { version: 0, maxShardBytes: ONE }), []);
      // Version 1, sharded, is in place when the kill comes: only the old one file is left to remove.
      const first = await killBefore(dir, { version: 1, maxShardBytes: THREE }, `^remove ${SINGLE_FILE}$`);
      ok(first, "the first save was killed");
      const one = await afterKill(gpu, dir, [1]);
      ok(one.ok, `killed before ${first}: ${one.text}`);
      // Version 2, one file, killed as it renames its file in: version 1 or 2 may be there, not 0.
      const second = await killBefore(
        dir,
        { version: 2, maxShardBytes: ONE },
        `^rename \\S+/${SINGLE_FILE} ${SINGLE_FILE}$`,
      );
      ok(second, "the second save was killed");
      const two = await afterKill(gpu, dir, [1, 2]);
      ok(two.ok, `killed before ${first}, then before ${second}: ${two.text}`);
      deepEqual(await cleanSave(gpu, dir, { version: 3, maxShardBytes: TWO }), []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

gpuTest(
  "a process saving in a loop, SIGKILLed at seeded random moments, leaves the last save or the one under way",
  async (gpu) => {
    const dir = await Deno.makeTempDir({ prefix: "lisa-shards-kill-" }); // outside the project
    try {
      // Every save a new version, the layouts cycling through the switches of the tests above.
      const saves: Save[] = [
        { version: 0, maxShardBytes: THREE },
        { version: 1, maxShardBytes: THREE },
        { version: 2, maxShardBytes: ONE },
        { version: 3, maxShardBytes: TWO },
        { version: 4, maxShardBytes: TWO },
        { version: 5, maxShardBytes: ONE },
      ];
      deepEqual(await cleanSave(gpu, dir, saves[5]), []);
      let held: number | null = 5;
      let next = 0; // the save the next child starts with
      const draw = rng(7);
      const failures: string[] = [];
      const log: string[] = [];
      const kills = 20;
      for (let i = 0; i < kills; i++) {
        const plan = [...saves.slice(next), ...saves.slice(0, next)];
        const child = await spawnChild(dir, { saves: plan, stopAt: -1, loop: true });
        const ms = Math.floor(draw() * 40);
        let last: unknown = null;
        let done = 0;
        for await (const line of lines(child.stdout)) {
          if (line === "ready") {
            setTimeout(() => {
              try {
                child.kill("SIGKILL");
              } catch { /* it ended first: ended() says how */ }
            }, ms);
          }
          if (Array.isArray(line) && line[0] === "saved") done++;
          last = line;
        }
        equal(await ended(child), "killed");
        const lastWhole = done ? plan[(done - 1) % plan.length].version : held;
        const underWay = plan[done % plan.length].version;
        next = (next + done) % saves.length;
        const allowed = [...new Set([lastWhole ?? underWay, underWay])];
        const state = await afterKill(gpu, dir, allowed);
        const when = `kill ${i}, ${ms} ms after start, ${done} saves done, last announced ${
          JSON.stringify(last)
        }`;
        log.push(`${when}: ${state.text}`);
        if (!state.ok) failures.push(`${when}: ${state.text}`);
        held = state.ok ? state.version : null;
      }
      console.log(log.join("\n"));
      deepEqual(await cleanSave(gpu, dir, saves[0]), [], "what the next save left");
      ok(failures.length === 0, `${failures.length} of ${kills} kills:\n${failures.join("\n")}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
