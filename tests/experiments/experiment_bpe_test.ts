/**
 * The comparison on a GPT-2-vocabulary model, as `--preset bpe` runs it: BPE tasks, eot in the
 * scored loss, 50257-row embedding and head, `--scale` reducing the run. A tiny model keeps it fast.
 */
import { equal, ok } from "node:assert/strict";
import { experiment } from "../../experiments/main.ts";
import { type Preset, PRESETS } from "../../experiments/presets.ts";
import { cacheTempDir, testGpu } from "../helpers.ts";

Deno.test({
  name: "the whole comparison runs on a GPT-2-vocabulary model at reduced scale",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const out = await cacheTempDir("experiment-bpe-test-");
    const tiny = PRESETS.tiny;
    // One learning rate per family: the sweep's picking is the byte-level test's concern.
    const preset: Preset = {
      ...tiny,
      name: "tiny-bpe",
      model: { ...tiny.model, vocabSize: 50257 },
      experiment: { ...tiny.experiment, lrs: { full: [1e-3], lora: [1e-2], lisa: [1e-3] } },
    };
    await experiment({
      preset,
      scale: 0.25,
      out,
      fresh: true,
      quiet: true,
      gpu: await testGpu(),
      command: "test",
    });
    const r = JSON.parse(await Deno.readTextFile(`${out}/results.json`));
    equal(r.complete, true);
    equal(r.config.model.vocabSize, 50257);
    equal(r.config.scale, 0.25);
    equal(r.config.tasks.definitions.steps, 2, "6 steps × 0.25, kept at the minimum of 2");
    for (const [key, m] of Object.entries(r.methods) as [string, { evalLoss: number; accuracy: number }][]) {
      ok(Number.isFinite(m.evalLoss), `${key}: finite test loss`);
      ok(m.accuracy >= 0 && m.accuracy <= 1, `${key}: accuracy`);
    }
    const before = r.beforeFineTuning.arithmetic;
    // An untrained 50257-way head: the loss over the answer and <|endoftext|> is near ln(50257) = 10.8.
    ok(before.evalLoss > 8 && before.evalLoss < 14, `loss before fine-tuning ${before.evalLoss}`);
    // The large vocabulary shows in the norms: the 50257 × 64 embedding outweighs a 2-layer block.
    const full = r.weightNormSkew.full as { layer: string; weightNorm: number }[];
    const emb = full.find((e) => e.layer === "embedding")!.weightNorm;
    ok(
      full.filter((e) => e.layer.startsWith("h.")).every((e) => e.weightNorm * 3 < emb),
      "embedding ≫ blocks",
    );
    ok((await Deno.readTextFile(`${out}/report.md`)).includes("**Reduced run**: `--scale 0.25`"));
    await Deno.remove(out, { recursive: true });
  },
});
