/**
 * One fine-tuning run of one method with one seed on one task: a fresh copy of the base model, the
 * method, AdamW and the schedule every method shares, then the loss on one held-out split (dev for
 * choices, test for reported numbers), exact-match accuracy (greedy decoding) on it where the task has answers, and optionally per-layer weight norms each step.
 */
import { evalExampleBatches, ExampleBatcher } from "../core/data/batches.ts";
import type { Example } from "../core/data/formats.ts";
import { tokenizerFor } from "../core/data/tokenizer.ts";
import { evaluate } from "../core/evaluate.ts";
import type { StatePolicy } from "../core/finetune/lisa.ts";
import { LoraMethod } from "../core/finetune/lora.ts";
import type { FinetuneMethod } from "../core/finetune/method.ts";
import { makeMethod, type MethodSettings } from "../core/finetune/methods.ts";
import { msPerStep, type StepRecord, train } from "../core/finetune/trainer.ts";
import { scoreCompletions } from "../core/generate.ts";
import type { Gpu } from "../core/gpu.ts";
import { downloadParameters } from "../core/io/hf.ts";
import { loadModel } from "../core/io/models.ts";
import type { CategoryBytes } from "../core/memory.ts";
import type { LanguageModel } from "../core/nn/model.ts";
import { AdamW } from "../core/optim/adamw.ts";
import { makeSchedule } from "../core/optim/schedule.ts";
import type { Tensor } from "../core/tensor.ts";
import { isBlockGroup } from "./analyses.ts";
import { type Pair, type Split, type Task, toExamples } from "./tasks.ts";

/** A method configuration of the experiment (`lora` is r = 8, `lisa` is E+H+2L, ...). */
export interface MethodSpec {
  /** Key in results.json, e.g. `lora_r32`. */
  key: string;
  /** Label in the report, e.g. `LoRA r=32`. */
  label: string;
  method: "full" | "lora" | "lisa";
  /** LISA: blocks active at a time. */
  gamma?: number;
  /** LoRA: rank (alpha = 2·rank, all linear layers). */
  rank?: number;
}

/** What one run needs. */
export interface RunSpec {
  /** Base model directory. */
  base: string;
  task: Task;
  /** The held-out split scored: `dev` for the sweep's choices, `test` for reported numbers. */
  split: Split;
  spec: MethodSpec;
  lr: number;
  steps: number;
  batchSize: number;
  blockSize: number;
  /** LISA: steps between redraws (K). */
  period: number;
  /** LISA: optimizer state policy. */
  state?: StatePolicy;
  seed: number;
  /** Measure per-layer weight and update norms after every step. */
  norms?: boolean;
  /** Score exact-match accuracy by greedy decoding (tasks with answers); the loss then comes from the same pass. */
  accuracy?: boolean;
  /** Called with each step's record as it is read back (the web page's live curves). */
  onStep?: (r: StepRecord) => void;
  /** Called with the fine-tuned model and its method after scoring, before the model is freed. */
  afterRun?: (model: LanguageModel, method: FinetuneMethod) => Promise<void>;
}

/** Per-layer norms (mean over steps): embedding (wte, wpe), each block, head (ln_f; the head is tied to wte). */
export interface LayerNorms {
  layers: string[];
  /** Mean over steps of ‖the layer's trainable weights‖ (LoRA: A and B in blocks; its frozen embedding and head as they are). */
  weight: number[];
  /** Mean over steps of ‖θ_t − θ_0‖ over the same tensors. */
  update: number[];
  /** LoRA only: mean over steps of ‖scaling·B·A‖ per block, the change the adapters make to W (0 elsewhere). */
  delta?: number[];
}

/** What one run measured. */
export interface RunResult {
  key: string;
  task: string;
  lr: number;
  seed: number;
  trainLoss: number[];
  evalLoss: number;
  accuracy: number | null;
  /** Exact matches behind accuracy (null without). */
  hits: number | null;
  /** Held-out examples behind evalLoss and accuracy. */
  heldOut: number;
  /** The split evalLoss and accuracy come from. */
  split: Split;
  /** Mean ms per step (core/finetune/trainer.ts's msPerStep: compiles excluded). */
  msPerStep: number;
  tokensPerSec: number;
  /** Kernels compiled during the run and their host time (not part of msPerStep). */
  compiles: { count: number; ms: number };
  memory: { peakBytes: number; peak: CategoryBytes };
  /** Per-step peak bytes by category and the blocks active at that step (the memory timeline). */
  timeline: { step: number; memory: CategoryBytes; activeLayers: number[] }[];
  norms?: LayerNorms;
}

/** The settings of `spec` in run `r`: LoRA on every linear layer with alpha = 2·r (the experiment's design). */
export function methodSettings(r: RunSpec): MethodSettings {
  return {
    method: r.spec.method,
    seed: r.seed,
    gamma: r.spec.gamma,
    period: r.period,
    state: r.state,
    rank: r.spec.rank,
    targets: "all-linear",
  };
}

/**
 * Layer groups of the model, in order: `embedding` (what comes before the blocks: wte and wpe, or
 * embed_tokens), one per block (`h.3`, or `layers.3` for LLaMA's `model.layers.3`), and `head`
 * (what comes after: ln_f, or norm and an untied lm_head).
 */
function layerGroups(model: LanguageModel): [string, [string, Tensor][]][] {
  const all = model.namedParameters();
  const n = model.config.nLayer;
  const prefixes = Array.from({ length: n }, (_, i) => `${model.blockPrefix(i)}.`);
  const block = (name: string) => prefixes.findIndex((p) => name.startsWith(p));
  const firstBlock = all.findIndex(([name]) => block(name) >= 0);
  const groups: [string, [string, Tensor][]][] = [["embedding", all.slice(0, firstBlock)]];
  prefixes.forEach((p, i) =>
    groups.push([p.replace(/^model\./, "").slice(0, -1), all.filter(([name]) => block(name) === i)])
  );
  const lastBlock = all.findLastIndex(([name]) => block(name) >= 0);
  groups.push(["head", all.slice(lastBlock + 1)]);
  return groups;
}

/** Records per-layer weight and update norms of the tensors each layer trains. */
class NormTracker {
  readonly #model: LanguageModel;
  readonly #groups: [string, [string, Tensor][]][];
  /** Per group, whether nothing in it trains (LoRA's embedding and head): read once, in start(). */
  readonly #fixed: boolean[];
  /** √Σw² of each fixed group, from start(). */
  readonly #fixedWeight = new Map<number, number>();
  readonly #initial = new Map<string, Float32Array>();
  readonly #weight: number[];
  readonly #update: number[];
  readonly #delta: number[] | null;
  readonly #adapters: {
    group: number;
    a: string;
    b: string;
    scaling: number;
    r: number;
    inF: number;
    outF: number;
  }[] = [];
  #samples = 0;

  constructor(model: LanguageModel, method: FinetuneMethod) {
    const lora = method instanceof LoraMethod;
    this.#model = model;
    const groups = layerGroups(model);
    // LoRA trains only A and B inside blocks; its embedding and head are frozen and reported as they are.
    this.#groups = groups.map(([name, ts]) => [
      name,
      lora && isBlockGroup(name)
        ? ts.filter(([n]) => n.includes(".lora_"))
        : ts.filter(([n]) => !n.includes(".lora_")),
    ]);
    this.#fixed = groups.map(([name]) => lora && !isBlockGroup(name));
    this.#weight = new Array(groups.length).fill(0);
    this.#update = new Array(groups.length).fill(0);
    this.#delta = lora ? new Array(groups.length).fill(0) : null;
    if (method instanceof LoraMethod) {
      for (const [path, m] of method.adapters()) {
        const group = groups.findIndex(([name]) => path.replace(/^model\./, "").startsWith(`${name}.`));
        const r = m.A.shape[0];
        this.#adapters.push({
          group,
          a: `${path}.lora_A.weight`,
          b: `${path}.lora_B.weight`,
          scaling: m.scaling,
          r,
          inF: m.inFeatures,
          outF: m.outFeatures,
        });
      }
    }
  }

  /** Host values of the tensors of the groups `which` selects, by name (one GPU round trip). */
  async #values(which: (g: number) => boolean): Promise<Map<string, Float32Array>> {
    const entries = this.#groups.filter((_, g) => which(g)).flatMap(([, ts]) => ts);
    const out = new Map<string, Float32Array>();
    for (const [n, t] of await downloadParameters(this.#model, entries)) out.set(n, t.data);
    return out;
  }

  async start(): Promise<void> {
    for (const [n, v] of await this.#values(() => true)) this.#initial.set(n, v);
    this.#groups.forEach(([, ts], g) => {
      if (!this.#fixed[g]) return;
      let w = 0;
      for (const [n] of ts) for (const x of this.#initial.get(n)!) w += x * x;
      this.#fixedWeight.set(g, Math.sqrt(w));
    });
  }

  async sample(): Promise<void> {
    const now = await this.#values((g) => !this.#fixed[g]);
    this.#groups.forEach(([, ts], g) => {
      const fixed = this.#fixedWeight.get(g);
      if (fixed !== undefined) {
        this.#weight[g] += fixed; // unchanged since start(), so its update norm stays 0
        return;
      }
      let w = 0, u = 0;
      for (const [n] of ts) {
        const a = now.get(n)!, a0 = this.#initial.get(n)!;
        for (let i = 0; i < a.length; i++) {
          w += a[i] * a[i];
          u += (a[i] - a0[i]) ** 2;
        }
      }
      this.#weight[g] += Math.sqrt(w);
      this.#update[g] += Math.sqrt(u);
    });
    if (this.#delta) {
      const sq = new Array(this.#delta.length).fill(0);
      for (const ad of this.#adapters) {
        const a = now.get(ad.a)!, b = now.get(ad.b)!;
        for (let o = 0; o < ad.outF; o++) {
          for (let i = 0; i < ad.inF; i++) {
            let s = 0;
            for (let k = 0; k < ad.r; k++) s += b[o * ad.r + k] * a[k * ad.inF + i];
            sq[ad.group] += (ad.scaling * s) ** 2;
          }
        }
      }
      sq.forEach((v, g) => (this.#delta![g] += Math.sqrt(v)));
    }
    this.#samples++;
  }

  result(): LayerNorms {
    const n = Math.max(1, this.#samples);
    return {
      layers: this.#groups.map(([name]) => name),
      weight: this.#weight.map((x) => x / n),
      update: this.#update.map((x) => x / n),
      delta: this.#delta?.map((x) => x / n),
    };
  }
}

/** A model's numbers on one held-out split. */
export interface HeldOutScore {
  /** Mean cross-entropy over the response tokens (nats). */
  evalLoss: number;
  /** Exact-match accuracy of greedy decoding, where the task has answers. */
  accuracy: number | null;
  /** Exact matches (null without answers). */
  hits: number | null;
  /** Examples scored. */
  heldOut: number;
}

/**
 * Loss and, for tasks with answers, exact-match accuracy of greedy decoding (the response's tokens
 * through its final newline) on `pairs`. Answers are scored by teacher forcing with the loss from the
 * same forward pass (core/generate.ts `scoreCompletions`); rows are `blockSize` long when every pair
 * fits, else the model's whole context.
 */
export async function scoreHeldOut(
  model: LanguageModel,
  pairs: readonly Pair[],
  exactMatch: boolean,
  batchSize: number,
  blockSize: number,
): Promise<HeldOutScore> {
  const tok = tokenizerFor(model.config.vocabSize);
  if (!exactMatch) {
    const examples = toExamples(pairs, tok);
    const { loss } = await evaluate(model, evalExampleBatches(examples, blockSize, batchSize));
    return { evalLoss: loss, accuracy: null, hits: null, heldOut: pairs.length };
  }
  // The loss counts what training counts after the prompt: the response and the end-of-text id.
  const after = tok.eot === null ? [] : [tok.eot];
  const items = pairs.map((p) => ({ prompt: tok.encode(p.prompt), response: tok.encode(p.response), after }));
  const need = Math.max(...items.map((it) => it.prompt.length + it.response.length + after.length - 1));
  const t = need <= blockSize ? blockSize : model.config.blockSize;
  const scores = await scoreCompletions(model, items, { batchSize, blockSize: t });
  const hits = scores.filter((s) => s.match).length;
  const nll = scores.reduce((a, s) => a + s.nll, 0), tokens = scores.reduce((a, s) => a + s.tokens, 0);
  return { evalLoss: nll / tokens, accuracy: hits / pairs.length, hits, heldOut: pairs.length };
}

/** The base model's numbers on `task`'s `split` before any fine-tuning. */
export async function scoreBase(
  gpu: Gpu,
  base: string,
  task: Task,
  split: Split,
  batchSize: number,
  blockSize: number,
): Promise<HeldOutScore> {
  const { model } = await loadModel(gpu, base);
  try {
    return await scoreHeldOut(model, task[split], task.exactMatch, batchSize, blockSize);
  } finally {
    model.dispose();
  }
}

/** Runs `r` and returns its measurements. */
export async function runOne(gpu: Gpu, r: RunSpec): Promise<RunResult> {
  const { model } = await loadModel(gpu, r.base);
  try {
    const tok = tokenizerFor(model.config.vocabSize);
    const trainEx: Example[] = toExamples(r.task.train, tok);
    const heldOut = r.task[r.split];
    const method = makeMethod(model, methodSettings(r));
    const optimizer = new AdamW(gpu, { weightDecay: 0 });
    const batcher = new ExampleBatcher(trainEx, r.batchSize, r.blockSize, r.seed + 1);
    const norms = r.norms ? new NormTracker(model, method) : null;
    await norms?.start();
    const result = await train({
      model,
      method,
      optimizer,
      nextBatch: () => batcher.next(),
      schedule: makeSchedule({
        kind: "cosine",
        lr: r.lr,
        warmup: Math.max(1, Math.floor(r.steps / 10)),
        total: r.steps,
      }),
      steps: r.steps,
      maxGradNorm: 1,
      afterStep: norms ? () => norms.sample() : undefined,
      onStep: r.onStep,
    });
    const score = await scoreHeldOut(model, heldOut, r.accuracy === true, r.batchSize, r.blockSize);
    const ms = msPerStep(result.steps);
    optimizer.dispose();
    await r.afterRun?.(model, method);
    return {
      key: r.spec.key,
      task: r.task.name,
      lr: r.lr,
      seed: r.seed,
      trainLoss: result.steps.map((s) => s.loss),
      evalLoss: score.evalLoss,
      accuracy: score.accuracy,
      hits: score.hits,
      heldOut: heldOut.length,
      split: r.split,
      msPerStep: ms,
      tokensPerSec: ms > 0 ? (r.batchSize * r.blockSize) / (ms / 1000) : 0,
      compiles: { count: result.compiles, ms: result.compileMs },
      memory: { peakBytes: result.peakTotal, peak: result.peak },
      timeline: result.steps.map((s) => ({ step: s.step, memory: s.memory, activeLayers: s.activeLayers })),
      norms: norms?.result(),
    };
  } finally {
    model.dispose();
  }
}
