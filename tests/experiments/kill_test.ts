/**
 * Kill tests: `pretrain` and `finetune` (each method) are killed with SIGKILL at seeded random
 * moments, some while a checkpoint is being written, then resumed in a new process until they
 * finish. The checkpoint left on disk is always whole (the old one or the new one), and the
 * finished run's losses equal the uninterrupted run's exactly.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { childEnv } from "../../experiments/child.ts";
import { finetune, parseFinetuneArgs } from "../../experiments/finetune.ts";
import { pretrain, writeBin } from "../../experiments/pretrain.ts";
import { preset } from "../../experiments/presets.ts";
import { readSafetensorsFile } from "../../core/io/safetensors.ts";
import { rng, taskFlags, testGpu } from "../helpers.ts";

const tiny = new URL("../fixtures/gpt2_tiny/transformer", import.meta.url).pathname;
const root = new URL("../../", import.meta.url).pathname;

/**
 * When to kill: once the checkpoint on disk is from step `step` or later, either `ms` after the
 * next checkpoint write is seen to start, or `ms` later.
 */
type KillPoint = { step: number; inWrite: boolean; ms: number };

/** Step of the whole checkpoint in `dir`, or -1. */
async function checkpointStep(dir: string): Promise<number> {
  try {
    return JSON.parse(await Deno.readTextFile(`${dir}/trainer.json`)).step;
  } catch {
    return -1;
  }
}

/** The folders a checkpoint write leaves beside `dir` (its temporary and its previous copy). */
async function inFlight(dir: string): Promise<boolean> {
  const parent = dir.slice(0, dir.lastIndexOf("/"));
  try {
    for await (const e of Deno.readDir(parent)) {
      if (e.name.startsWith("checkpoint.tmp-") || e.name.startsWith("checkpoint.old-")) return true;
    }
  } catch { /* not created yet */ }
  return false;
}

/**
 * Runs the CLI; kills it at `kill` (if it is still running then). Returns whether it was killed,
 * and its stderr when it failed otherwise.
 */
async function runKilled(
  task: string,
  script: string,
  args: string[],
  ckpt: string,
  kill: KillPoint | null,
): Promise<"killed" | "finished"> {
  const child = new Deno.Command("deno", {
    args: ["run", ...await taskFlags(task), `${root}${script}`, ...args],
    clearEnv: true,
    env: childEnv(),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let exited = false;
  const status = child.status.then((s) => (exited = true, s));
  const stderr = new Response(child.stderr).text();
  const tick = () => new Promise((r) => setTimeout(r, 1));
  if (kill) {
    while (!exited && (await checkpointStep(ckpt)) < kill.step) await tick();
    if (kill.inWrite) { while (!exited && !(await inFlight(ckpt))) await tick(); }
    await new Promise((r) => setTimeout(r, kill.ms));
    try {
      child.kill("SIGKILL");
    } catch { /* it ended first: its status says how */ }
  }
  const s = await status;
  if (s.signal === "SIGKILL") return "killed";
  if (!s.success) throw new Error(`${script} ${args.join(" ")} failed:\n${await stderr}`);
  return "finished";
}

/** What a kill may leave: a whole checkpoint in place, a whole one set aside mid-swap, or none yet. */
async function checkWhole(ckpt: string): Promise<string> {
  const parent = ckpt.slice(0, ckpt.lastIndexOf("/"));
  const names = [...Deno.readDirSync(parent)].map((e) => e.name);
  const whole = async (d: string) => {
    const t = JSON.parse(await Deno.readTextFile(`${d}/trainer.json`));
    ok(Number.isInteger(t.step), `${d}: trainer.json has a step`);
    await readSafetensorsFile(`${d}/optimizer.safetensors`);
    const files = [...Deno.readDirSync(d)].map((e) => e.name);
    ok(files.some((n) => n === "model.safetensors" || n === "adapter_model.safetensors"), `${d}: weights`);
    for (const w of files.filter((n) => n.endsWith(".safetensors"))) await readSafetensorsFile(`${d}/${w}`);
    return t.step as number;
  };
  if (names.includes("checkpoint")) return `checkpoint after step ${await whole(ckpt)}`;
  const old = names.filter((n) => n.startsWith("checkpoint.old-"));
  if (old.length) {
    equal(old.length, 1, "one set-aside checkpoint");
    return `set-aside checkpoint after step ${await whole(`${parent}/${old[0]}`)}`;
  }
  return "no checkpoint yet";
}

/**
 * Runs `args` to completion through up to `kills` seeded kills (at or before the checkpoint of step
 * `lastCheckpoint`), resuming each time from what is on disk; returns a log of what each kill left.
 */
async function killAndResume(
  task: string,
  script: string,
  args: string[],
  out: string,
  seed: number,
  kills: number,
  lastCheckpoint: number,
): Promise<string[]> {
  const draw = rng(seed);
  const ckpt = `${out}/checkpoint`;
  const log: string[] = [];
  let resume = false;
  for (let attempt = 0;; attempt++) {
    const inWrite = draw() < 0.5;
    const kill: KillPoint | null = attempt >= kills ? null : {
      // 0 means: without waiting for a checkpoint (a kill may come before the first one).
      step: 2 * Math.floor(draw() * (lastCheckpoint / 2)) || -1,
      inWrite,
      ms: Math.floor(draw() * (inWrite ? 15 : 400)),
    };
    const r = await runKilled(task, script, [...args, ...(resume ? ["--resume"] : [])], ckpt, kill);
    if (r === "finished") return log;
    const left = await checkWhole(ckpt);
    const when = kill!.inWrite ? `${kill!.ms} ms into a checkpoint write` : `${kill!.ms} ms later`;
    const after = kill!.step < 0 ? "" : ` once checkpointed at step ${kill!.step}`;
    log.push(`killed${after}, ${when}: ${left}`);
    resume = left !== "no checkpoint yet";
  }
}

Deno.test({
  name:
    "SIGKILL at seeded moments (checkpoint writes included), resume in a new process: exactly the uninterrupted losses",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir({ prefix: "lisa-kill-" });
    try {
      // pretrain: the uninterrupted run in this process; the killed one in child processes.
      const p = preset("tiny");
      const steps = 10;
      const whole = await pretrain({
        preset: p,
        steps,
        out: `${dir}/pretrain-whole`,
        seed: 0,
        resume: false,
        quiet: true,
        gpu,
        checkpointEvery: 2,
      });
      const args = ["--preset", "tiny", "--steps", `${steps}`, "--checkpoint-every", "2", "--quiet"];
      const log = await killAndResume(
        "pretrain",
        "experiments/pretrain.ts",
        [...args, "--out", `${dir}/pretrain`],
        `${dir}/pretrain`,
        11,
        2,
        steps,
      );
      const killed = JSON.parse(await Deno.readTextFile(`${dir}/pretrain/metrics.json`));
      deepEqual(
        killed.steps.map((s: { loss: number }) => s.loss),
        whole.steps.map((s) => s.loss),
        `pretrain: ${log.join("; ")}`,
      );
      equal(killed.valLoss, whole.valLoss);
      console.log(`pretrain: ${log.join("; ") || "finished before each kill"}`);

      await writeBin(`${dir}/data.bin`, Uint32Array.from({ length: 900 }, (_, i) => (i * 7 + (i >> 3)) % 61));
      const methods: [string, string[]][] = [
        ["full", ["--method", "full"]],
        ["lora", ["--method", "lora", "--rank", "2", "--dropout", "0.1", "--targets", "all-linear"]],
        ["lisa", ["--method", "lisa", "--gamma", "1", "--period", "2", "--state", "offload"]],
      ];
      for (const [i, [name, flags]] of methods.entries()) {
        const common = [
          "--model",
          tiny,
          "--data",
          `${dir}/data.bin`,
          "--steps",
          "12",
          "--block-size",
          "8",
          "--batch-size",
          "2",
          "--lr",
          "0.01",
          "--seed",
          "0",
          "--checkpoint-every",
          "2",
          "--quiet",
          ...flags,
        ];
        const out = `${dir}/${name}`;
        const log = await killAndResume(
          "finetune",
          "experiments/finetune.ts",
          [...common, "--out", out],
          out,
          100 + i,
          2,
          12,
        );
        const killed = JSON.parse(await Deno.readTextFile(`${out}/metrics.json`));
        const ref = await finetune({ ...parseFinetuneArgs([...common, "--out", `${out}-whole`]), gpu });
        deepEqual(
          killed.steps.map((s: { loss: number }) => s.loss),
          ref.steps.map((s) => s.loss),
          `${name}: ${log.join("; ")}`,
        );
        console.log(`${name}: ${log.join("; ") || "finished before each kill"}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
