/** pretrain and eval as a user runs them: separate processes, files on disk. */
import { deepEqual, equal, ok } from "node:assert/strict";
import { runTask } from "../helpers.ts";

/** Runs a CLI as its task does (deno.json's permissions); its last stdout line. */
async function run(script: string, args: string[]): Promise<string> {
  const task = script.includes("pretrain") ? "pretrain" : "eval";
  const out = await runTask(task, script, args);
  if (out.code !== 0) throw new Error(`${script} ${args.join(" ")} failed:\n${out.stderr}`);
  return out.stdout.split("\n").at(-1)!;
}

interface Metrics {
  steps: { step: number; loss: number }[];
  evals: { step: number; loss: number }[];
  valLoss: number;
}
const metrics = async (dir: string): Promise<Metrics> =>
  JSON.parse(await Deno.readTextFile(`${dir}/metrics.json`));

Deno.test({
  name:
    "pretrain --preset tiny lowers validation loss; a run resumed in a new process repeats the uninterrupted losses exactly; eval reproduces the final validation loss",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "lisa-pretrain-" }); // outside the project, as a user's folders are
    const common = ["--preset", "tiny", "--steps", "20", "--quiet"];
    const whole = JSON.parse(await run("experiments/pretrain.ts", [...common, "--out", `${root}/whole`]));
    await run("experiments/pretrain.ts", [...common, "--stop-after", "10", "--out", `${root}/parts`]);
    const resumed = JSON.parse(
      await run("experiments/pretrain.ts", [...common, "--resume", "--out", `${root}/parts`]),
    );

    const a = await metrics(`${root}/whole`), b = await metrics(`${root}/parts`);
    equal(a.steps.length, 20);
    deepEqual(b.steps.map((s) => s.step), a.steps.map((s) => s.step));
    deepEqual(b.steps.map((s) => s.loss), a.steps.map((s) => s.loss), "losses of the resumed run");
    equal(resumed.valLoss, whole.valLoss);

    ok(
      a.evals[0].step === 0 && a.valLoss < a.evals[0].loss - 0.5,
      `validation loss ${a.evals[0].loss} → ${a.valLoss}`,
    );

    const evaluated = JSON.parse(
      await run("experiments/eval.ts", [
        "--model",
        `${root}/whole`,
        "--data",
        `${root}/whole/val.bin`,
        "--block-size",
        "64",
        "--quiet",
      ]),
    );
    ok(
      Math.abs(evaluated.loss - whole.valLoss) <= 1e-6 * whole.valLoss,
      `eval ${evaluated.loss} vs pretrain ${whole.valLoss}`,
    );
    equal(evaluated.tokens, whole.tokens);
    await Deno.remove(root, { recursive: true });
  },
});
