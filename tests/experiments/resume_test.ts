/** finetune --stop-after / --resume for every method: the resumed run repeats the uninterrupted one exactly. */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { finetune, type FinetuneOptions } from "../../experiments/finetune.ts";
import { FlagError } from "../../experiments/flags.ts";
import { writeBin } from "../../experiments/pretrain.ts";
import { gpuTest } from "../helpers.ts";

const tiny = new URL("../fixtures/gpt2_tiny/transformer", import.meta.url).pathname;

/** Each method with the settings whose state a resume must carry. */
const CASES: [string, Partial<FinetuneOptions>][] = [
  ["full", { method: "full" }],
  ["lora with dropout", { method: "lora", rank: 2, dropout: 0.2, targets: "all-linear" }],
  ["lisa reset", { method: "lisa", gamma: 1, period: 2, state: "reset" }],
  ["lisa offload", { method: "lisa", gamma: 1, period: 1, state: "offload", seed: 0 }],
  ["lisa keep", { method: "lisa", gamma: 1, period: 3, state: "keep" }],
];

gpuTest(
  "finetune resumed after --stop-after repeats the uninterrupted run exactly, for every method",
  async (gpu) => {
    // Outside the project: a user's folders live anywhere.
    const root = await Deno.makeTempDir({ prefix: "lisa-resume-" });
    try {
      await writeBin(
        `${root}/data.bin`,
        Uint32Array.from({ length: 900 }, (_, i) => (i * 7 + (i >> 3)) % 61),
      );
      for (const [name, c] of CASES) {
        const common = {
          model: tiny,
          data: `${root}/data.bin`,
          steps: 7,
          blockSize: 8,
          batchSize: 2,
          lr: 1e-2,
          seed: 3,
          valFraction: 0.2,
          evalEvery: 2,
          quiet: true,
          gpu,
          ...c,
        } as FinetuneOptions;
        const whole = await finetune({ ...common, out: `${root}/${name}/whole` });
        const out = `${root}/${name}/parts`;
        const first = await finetune({ ...common, out, stopAfter: 3, checkpointEvery: 2 });
        equal(first.steps.length, 3, `${name}: stopped after 3 steps`);
        equal(first.finalValLoss, null, `${name}: no final evaluation when stopped`);
        const trainer = JSON.parse(await Deno.readTextFile(`${out}/checkpoint/trainer.json`));
        equal(trainer.step, 3);
        // Offloaded moments are those of blocks trained before step 2 and not at it (none for other policies).
        const now = first.steps[2].activeLayers;
        const left = [...new Set(first.steps.slice(0, 2).flatMap((s) => s.activeLayers))].filter((b) =>
          !now.includes(b)
        );
        const blocks = [...new Set((trainer.offloaded as string[]).map((n) => Number(n.split(".")[1])))];
        deepEqual(blocks.sort(), c.state === "offload" ? left.sort() : [], `${name}: offloaded moments`);
        if (c.state === "offload") ok(left.length > 0, "the seed makes a block leave before the checkpoint");
        const rest = await finetune({ ...common, out, resume: true });
        deepEqual(rest.steps.map((s) => s.loss), whole.steps.map((s) => s.loss), `${name}: losses`);
        deepEqual(
          rest.steps.map((s) => s.activeLayers),
          whole.steps.map((s) => s.activeLayers),
          `${name}: blocks`,
        );
        deepEqual(rest.evals, whole.evals, `${name}: evaluations`);
        equal(rest.finalValLoss, whole.finalValLoss, `${name}: final validation loss`);
        const lines = (await Deno.readTextFile(`${out}/steps.jsonl`)).trim().split("\n").map((l) =>
          JSON.parse(l)
        );
        deepEqual(lines.map((l) => l.step), [0, 1, 2, 3, 4, 5, 6], `${name}: steps.jsonl has each step once`);
        await rejects(
          finetune({ ...common, out, resume: true, lr: 2e-2 }),
          (e: Error) => e instanceof FlagError && /made with lr = 0\.01, not 0\.02/.test(e.message),
          `${name}: a resume with other settings is refused`,
        );
      }
      await rejects(
        finetune({
          model: tiny,
          data: `${root}/data.bin`,
          method: "full",
          steps: 3,
          blockSize: 8,
          batchSize: 2,
          lr: 1e-2,
          seed: 0,
          out: `${root}/none`,
          resume: true,
          quiet: true,
          gpu,
        }),
        /--resume: no checkpoint in .*none\/checkpoint/,
      );
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);
