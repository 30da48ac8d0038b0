/**
 * `deno task eval --model DIR --data FILE --block-size T [--batch-size B]`: mean next-token loss
 * of a Hugging Face model directory (GPT-2, LLaMA or Mistral) on a data file. The token stream is cut into consecutive
 * non-overlapping windows of T+1 tokens (a trailing partial window is dropped); each window predicts
 * its last T tokens from its first T. `.bin` files are token ids; `.txt` is tokenized with the
 * model's tokenizer (its tokenizer.json, else GPT-2 BPE for vocab 50257 or bytes for 256); `.jsonl` prompt/response files score
 * the responses. Progress goes to stderr; the last stdout line is JSON {"loss", "tokens", "perplexity"}.
 */
import { evalExampleBatches, evalWindows } from "../core/data/batches.ts";
import { loadDataset, needsTokenizer } from "../core/data/formats.ts";
import { type EvalResult, evaluate } from "../core/evaluate.ts";
import { requestGpu } from "../core/gpu.ts";
import { loadModel, modelTokenizer } from "../core/io/models.ts";
import { positionsKey } from "../core/nn/families.ts";
import { FlagError, flagNumber, parseFlags, required, runCli } from "./flags.ts";
import { Progress } from "./progress.ts";

/** Options of {@link evalCommand}. */
export interface EvalOptions {
  model: string;
  data: string;
  blockSize: number;
  batchSize: number;
  quiet?: boolean;
}

/** Loads the model and data and evaluates; throws with a clear message on bad input. */
export async function evalCommand(o: EvalOptions): Promise<EvalResult> {
  const gpu = await requestGpu();
  const { model } = await loadModel(gpu, o.model);
  try {
    const v = model.config.vocabSize;
    if (o.blockSize > model.config.blockSize) {
      throw new FlagError(
        `--block-size ${o.blockSize} exceeds the model's ${positionsKey(model)} ${model.config.blockSize}`,
      );
    }
    const data = await loadDataset(
      o.data,
      needsTokenizer(o.data) ? await modelTokenizer(o.model, v) : null,
      v,
    );
    const batches = data.kind === "stream"
      ? evalWindows(data.tokens, o.blockSize, o.batchSize)
      : evalExampleBatches(data.examples, o.blockSize, o.batchSize);
    const progress = new Progress("eval", batches.length);
    return await evaluate(model, batches, (done) => o.quiet || progress.update(done));
  } finally {
    model.dispose();
  }
}

/** The usage line printed after a bad command line. */
export const EVAL_USAGE = "deno task eval --model DIR --data FILE --block-size T [--batch-size B] [--quiet]";

/** Parses eval's command line; throws a FlagError naming a bad flag. */
export function parseEvalArgs(args: string[]): EvalOptions {
  const values = parseFlags(args, {
    model: { type: "string" },
    data: { type: "string" },
    "block-size": { type: "string" },
    "batch-size": { type: "string", default: "8" },
    quiet: { type: "boolean" },
  });
  return {
    model: required("model", values.model),
    data: required("data", values.data),
    blockSize: flagNumber("block-size", required("block-size", values["block-size"]), "positive integer"),
    batchSize: flagNumber("batch-size", values["batch-size"], "positive integer"),
    quiet: values.quiet,
  };
}

if (import.meta.main) {
  await runCli("eval", EVAL_USAGE, async () => {
    const r = await evalCommand(parseEvalArgs(Deno.args));
    console.log(JSON.stringify({ loss: r.loss, tokens: r.tokens, perplexity: r.perplexity }));
  });
}
