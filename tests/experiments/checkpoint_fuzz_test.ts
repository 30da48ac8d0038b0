/**
 * Fuzzed checkpoint folders: seeded mutations of trainer.json and optimizer.safetensors, and
 * missing files, in LoRA and LISA (offload) checkpoints. `finetune --resume` either continues (with
 * finite losses) or fails with one line naming the checkpoint folder; never a stack trace from deep
 * code, never a hang.
 */
import { equal, ok } from "node:assert/strict";
import { finetune, type FinetuneOptions } from "../../experiments/finetune.ts";
import { FlagError } from "../../experiments/flags.ts";
import { writeBin } from "../../experiments/pretrain.ts";
import { CheckpointError } from "../../core/io/hf.ts";
import { SafetensorsError } from "../../core/io/safetensors.ts";
import { Draw, FuzzTally, mutateBytes, mutateJsonText } from "../fuzz.ts";
import { gpuTest } from "../helpers.ts";

const tiny = new URL("../fixtures/gpt2_tiny/transformer", import.meta.url).pathname;
const CLASSES = [CheckpointError, SafetensorsError, FlagError];
const MUTANTS = 100;

gpuTest("fuzzed checkpoint folders resume or fail with one line naming the checkpoint", async (gpu) => {
  const root = await Deno.makeTempDir({ prefix: "lisa-ckpt-fuzz-" });
  try {
    await writeBin(`${root}/data.bin`, Uint32Array.from({ length: 600 }, (_, i) => (i * 5 + (i >> 2)) % 61));
    const cases: [string, Partial<FinetuneOptions>][] = [
      ["lora", { method: "lora", rank: 2, dropout: 0.1 }],
      ["lisa", { method: "lisa", gamma: 1, period: 1, state: "offload", seed: 0 }],
    ];
    const tally = new FuzzTally("checkpoint-folder");
    for (const [name, c] of cases) {
      const common = {
        model: tiny,
        data: `${root}/data.bin`,
        steps: 3,
        blockSize: 8,
        batchSize: 2,
        lr: 1e-2,
        seed: 1,
        quiet: true,
        gpu,
        ...c,
      } as FinetuneOptions;
      const base = `${root}/${name}-base`;
      await finetune({ ...common, out: base, stopAfter: 2 });
      const files = [...Deno.readDirSync(`${base}/checkpoint`)].map((e) => e.name).sort();
      const trainer = JSON.parse(await Deno.readTextFile(`${base}/checkpoint/trainer.json`)) as unknown;
      const optimizer = await Deno.readFile(`${base}/checkpoint/optimizer.safetensors`);
      for (let i = 0; i < MUTANTS + files.length; i++) {
        const out = `${root}/${name}-${i}`;
        const ckpt = `${out}/checkpoint`;
        await Deno.mkdir(ckpt, { recursive: true });
        for (const f of files) await Deno.copyFile(`${base}/checkpoint/${f}`, `${ckpt}/${f}`);
        const d = new Draw(1000 * name.length + i);
        let what: string;
        if (i >= MUTANTS) {
          what = `remove ${files[i - MUTANTS]}`;
          await Deno.remove(`${ckpt}/${files[i - MUTANTS]}`);
        } else if (d.chance(0.6)) {
          const m = mutateJsonText(d, trainer);
          what = `trainer.json: ${m.what}`;
          await Deno.writeTextFile(`${ckpt}/trainer.json`, m.value);
        } else {
          const m = mutateBytes(d, optimizer);
          what = `optimizer.safetensors: ${m.what}`;
          await Deno.writeFile(`${ckpt}/optimizer.safetensors`, m.value);
        }
        await tally.run(
          `${name} seed ${d.seed}: ${what}`,
          ckpt,
          () => finetune({ ...common, out, resume: true }),
          CLASSES,
          (m) => {
            equal(m.steps.length, 3);
            ok(m.steps.every((s) => Number.isFinite(s.loss)), "finite losses");
          },
        );
      }
    }
    console.log(tally.summary());
    equal(tally.crashes.length, 0, tally.crashes.join("\n"));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
