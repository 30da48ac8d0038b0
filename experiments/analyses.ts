/** What the report concludes from the runs: the LR sweep's picks, the weight-norm skew, the paper's claims, ablation statistics. */
import type { LayerNorms, RunResult } from "./runner.ts";

/** One learning-rate sweep run. */
export interface SweepPoint {
  family: "full" | "lora" | "lisa";
  lr: number;
  /** Loss on the definitions task's dev split (choices are made on dev only; reports use test). */
  devLoss: number;
}

/** The learning rate with the lowest dev loss per family (NaN losses never win). */
export function pickLearningRates(points: readonly SweepPoint[]): Record<"full" | "lora" | "lisa", number> {
  const best = {} as Record<"full" | "lora" | "lisa", number>;
  for (const family of ["full", "lora", "lisa"] as const) {
    const mine = points.filter((p) => p.family === family && Number.isFinite(p.devLoss));
    if (mine.length === 0) throw new Error(`learning-rate sweep: no finite dev loss for ${family}`);
    best[family] = mine.reduce((a, b) => (b.devLoss < a.devLoss ? b : a)).lr;
  }
  return best;
}

/** Per-layer norms of one method, as results.json holds them. */
export interface SkewEntry {
  layer: string;
  /** Mean ‖trainable weights‖ (LoRA: A and B in blocks, the frozen embedding and head as they are). */
  weightNorm: number;
  /** Mean ‖θ_t − θ_0‖. */
  updateNorm: number;
  /** LoRA: mean ‖scaling·B·A‖ in blocks (the change to W); the frozen embedding and head keep their weight norm here. */
  effectiveNorm?: number;
}

/**
 * Whether a norm group is a transformer block (`h.3` for GPT-2, `layers.3` for LLaMA) rather than
 * the embedding or the head.
 */
export function isBlockGroup(layer: string): boolean {
  return layer !== "embedding" && layer !== "head";
}

/** Norms as per-layer entries. */
export function skewEntries(n: LayerNorms): SkewEntry[] {
  return n.layers.map((layer, i) => ({
    layer,
    weightNorm: n.weight[i],
    updateNorm: n.update[i],
    ...(n.delta ? { effectiveNorm: isBlockGroup(layer) ? n.delta[i] : n.weight[i] } : {}),
  }));
}

/** max(outer) / median(blocks) of a per-layer quantity: how skewed embedding/head are against the blocks. */
export function skewRatio(entries: readonly SkewEntry[], pick: (e: SkewEntry) => number): number {
  const blocks = entries.filter((e) => isBlockGroup(e.layer)).map(pick).sort((a, b) => a - b);
  const outer = entries.filter((e) => !isBlockGroup(e.layer)).map(pick);
  const median = blocks.length % 2
    ? blocks[(blocks.length - 1) / 2]
    : (blocks[blocks.length / 2 - 1] + blocks[blocks.length / 2]) / 2;
  return Math.max(...outer) / median;
}

/** A paper claim and whether this run supports it. */
export interface Claim {
  claim: string;
  verdict: "supported" | "not supported" | "inconclusive";
  evidence: string;
}

const MiB = 2 ** 20;
const f = (x: number, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : String(x));

/** Mean, sample standard deviation and count of per-seed values. */
export interface Stat {
  mean: number;
  /** Sample standard deviation (n − 1); 0 for one value. */
  std: number;
  n: number;
  values: number[];
}

/** {@link Stat} of `xs` (at least one value). */
export function stat(xs: readonly number[]): Stat {
  if (xs.length === 0) throw new Error("stat: no values");
  return { ...meanStd(xs), n: xs.length, values: [...xs] };
}

/** 95% Wilson score interval of a proportion with `hits` successes in `n` trials (z = 1.96). */
export function wilson(hits: number, n: number, z = 1.96): [number, number] {
  if (!(n > 0) || hits < 0 || hits > n) throw new Error(`wilson: ${hits} hits of ${n} trials`);
  const p = hits / n, z2 = z * z;
  const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = (z / (1 + z2 / n)) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

/** One method's numbers on one task over its seeds. */
export interface TaskStats {
  /** Test loss per seed. */
  testLoss: Stat;
  /** Exact-match accuracy per seed (tasks with answers). */
  accuracy: Stat | null;
  /** 95% Wilson interval of the mean accuracy for `items` test problems (the test set's own sampling error). */
  wilson: [number, number] | null;
  /** Test examples. */
  items: number;
  /** ms/step per seed. */
  msPerStep: Stat;
}

/** Per-task statistics of one method's runs (one per seed). */
export function taskStats(runs: readonly RunResult[]): TaskStats {
  const items = runs[0].heldOut;
  const accuracy = runs[0].accuracy === null ? null : stat(runs.map((r) => r.accuracy ?? NaN));
  return {
    testLoss: stat(runs.map((r) => r.evalLoss)),
    accuracy,
    wilson: accuracy ? wilson(Math.round(accuracy.mean * items), items) : null,
    items,
    msPerStep: stat(runs.map((r) => r.msPerStep)),
  };
}

/** Per method key and task, the statistics over seeds. */
export type MethodStats = Record<string, { definitions: TaskStats; arithmetic: TaskStats }>;

/** The rule every quality claim is judged by, as the report states it. */
export const CLAIM_RULE =
  "A quality claim is judged on means over seeds: with d = LISA's advantage (lower loss or higher " +
  'accuracy) and SE its standard error, "beats" is supported when d > 2·SE, not supported when ' +
  'd < −2·SE, inconclusive otherwise; "matches or beats" is the same rule with d + margin in place of d. ' +
  "SE² = s₁²/n₁ + s₂²/n₂ over the seeds (the spread of training); for accuracy it adds p(1−p)/N per " +
  "method for the N test problems (the test set's sampling error). With one seed there is no SE: inconclusive.";

/**
 * Verdict of the two-standard-error rule: `d` is the claim's side of the difference (positive
 * favours it), `se` its standard error (NaN when unknown), `margin` what "matches" allows (0: beats).
 */
export function twoSeVerdict(d: number, se: number, margin = 0): Claim["verdict"] {
  if (!Number.isFinite(d) || !Number.isFinite(se)) return "inconclusive";
  if (d + margin > 2 * se) return "supported";
  if (d + margin < -2 * se) return "not supported";
  return "inconclusive";
}

/** Standard error of the difference of two means over seeds (NaN when either has one seed). */
function seOfDifference(a: Stat, b: Stat): number {
  if (a.n < 2 || b.n < 2) return NaN;
  return Math.sqrt(a.std ** 2 / a.n + b.std ** 2 / b.n);
}

const pm = (x: Stat, d = 3) => `${f(x.mean, d)} ± ${f(x.std, d)}`;

/**
 * The paper's claims checked against the default configurations (full, lora = r 8, lisa = E+H+2L):
 * memory from `byKey` (the first seed's runs), quality and speed from `stats` (every seed) by
 * {@link CLAIM_RULE}; `adapter` names the device in the speed claim's evidence.
 */
export function checkClaims(
  byKey: Record<string, { definitions: RunResult; arithmetic: RunResult }>,
  stats: MethodStats,
  skew: { full?: SkewEntry[]; lora?: SkewEntry[] },
  adapter = "this adapter",
): Claim[] {
  const { full, lora, lisa } = byKey;
  const claims: Claim[] = [];
  if (full && lora && lisa && stats.full && stats.lora && stats.lisa) {
    const [mf, ml, ms] = [full, lora, lisa].map((r) => r.definitions.memory.peakBytes);
    const nearLora = ms <= ml * 1.1;
    claims.push({
      claim: "LISA's memory sits near LoRA's (and below full fine-tuning's)",
      verdict: nearLora && ms < mf ? "supported" : "not supported",
      evidence: `peak ${f(ms / MiB, 1)} MiB for LISA E+H+2L, ${f(ml / MiB, 1)} MiB for LoRA r=8, ${
        f(mf / MiB, 1)
      } MiB for full`,
    });
    const [of, ol, os] = [full, lora, lisa].map((r) => r.definitions.memory.peak.optimizer);
    claims.push({
      claim: "LISA needs far less optimizer state than full fine-tuning",
      verdict: os < of / 2 ? "supported" : "not supported",
      evidence: `optimizer ${f(os / MiB, 2)} MiB for LISA, ${f(of / MiB, 2)} MiB for full, ${
        f(ol / MiB, 2)
      } MiB for LoRA`,
    });
    const margin = 0.01;
    for (const task of ["definitions", "arithmetic"] as const) {
      const [sf, sl, ss] = [stats.full, stats.lora, stats.lisa].map((m) => m[task].testLoss);
      const seF = seOfDifference(ss, sf), seL = seOfDifference(ss, sl);
      claims.push({
        claim: `LISA matches or beats full fine-tuning (test loss, ${task})`,
        verdict: twoSeVerdict(sf.mean - ss.mean, seF, margin),
        evidence: `test loss ${pm(ss)} (LISA, ${ss.n} seeds) vs ${pm(sf)} (full, ${sf.n}): ` +
          `d = ${f(sf.mean - ss.mean)} (LISA's advantage), 2·SE ${f(2 * seF)}, margin ${margin}`,
      });
      claims.push({
        claim: `LISA beats LoRA (test loss, ${task})`,
        verdict: twoSeVerdict(sl.mean - ss.mean, seL),
        evidence: `test loss ${pm(ss)} (LISA) vs ${pm(sl)} (LoRA r=8): d = ${f(sl.mean - ss.mean)}, 2·SE ${
          f(2 * seL)
        }`,
      });
    }
    // The paper's speed claim (LISA ~1.5× faster per step than LoRA, ~2.9× than full), on this adapter.
    const [tf, tl, ts] = [stats.full, stats.lora, stats.lisa].map((m) => m.definitions.msPerStep.mean);
    claims.push({
      claim: "LISA's steps are faster than LoRA's and full fine-tuning's (paper: ~1.5× and ~2.9×)",
      verdict: ts < tl && ts < tf ? "supported" : "not supported",
      evidence:
        `ms/step ${f(ts, 0)} (LISA E+H+2L), ${f(tl, 0)} (LoRA r=8), ${f(tf, 0)} (full): LISA ${
          f(tl / ts, 2)
        }× LoRA's speed, ${
          f(tf / ts, 2)
        }× full's, on ${adapter} (wall-clock per step over each read window, definitions task, mean over ` +
        "seeds; compiles, evaluations and norm samples excluded)",
    });
    const acc = [stats.full, stats.lora, stats.lisa].map((m) => m.arithmetic);
    if (acc.every((a) => a.accuracy)) {
      const [af, al, as] = acc.map((a) => a.accuracy!);
      const items = acc[2].items;
      // NaN (one seed) stays NaN: no verdict.
      const binomial = (p: number) => (p * (1 - p)) / items;
      const seAcc = (a: Stat, b: Stat) =>
        Math.sqrt(seOfDifference(a, b) ** 2 + binomial(a.mean) + binomial(b.mean));
      const allZero = [af, al, as].every((a) => a.values.every((v) => v === 0));
      const pct = (a: Stat) => `${f(a.mean * 100, 1)} ± ${f(a.std * 100, 1)}%`;
      const note = allZero
        ? "; every run scored 0: the model is too small and trained too briefly to tell"
        : "";
      claims.push({
        claim: "LISA's task accuracy matches or beats full fine-tuning's (arithmetic, exact match)",
        verdict: allZero ? "inconclusive" : twoSeVerdict(as.mean - af.mean, seAcc(as, af), margin),
        evidence: `accuracy ${pct(as)} (LISA) vs ${pct(af)} (full) on ${items} test problems: d = ${
          f((as.mean - af.mean) * 100, 1)
        } points (LISA's advantage), 2·SE ${f(2 * seAcc(as, af) * 100, 1)} points, margin ${
          margin * 100
        } point${note}`,
      });
      claims.push({
        claim: "LISA's task accuracy beats LoRA's (arithmetic, exact match)",
        verdict: allZero ? "inconclusive" : twoSeVerdict(as.mean - al.mean, seAcc(as, al)),
        evidence: `accuracy ${pct(as)} (LISA) vs ${pct(al)} (LoRA r=8): d = ${
          f((as.mean - al.mean) * 100, 1)
        } points, 2·SE ${f(2 * seAcc(as, al) * 100, 1)} points${note}`,
      });
    }
  }
  if (skew.lora && skew.full) {
    const rf = skewRatio(skew.full, (e) => e.weightNorm);
    const re = skewRatio(skew.lora, (e) => e.effectiveNorm ?? e.weightNorm);
    const rw = skewRatio(skew.lora, (e) => e.weightNorm);
    claims.push({
      claim:
        "With LoRA the layer weight norms are heavily skewed (embedding/head ≫ middle layers); with full training they are even",
      verdict: re > 10 && rf < 3 ? "supported" : "not supported",
      evidence:
        `max(embedding, head) / median(block) norm: ${
          f(re, 1)
        }× for LoRA counting a block as its change ‖scaling·B·A‖ ` +
        `(${f(rw, 1)}× counting its A and B), ${f(rf, 2)}× for full`,
    });
    const outer = skew.lora.filter((e) => !isBlockGroup(e.layer));
    const uf = skewRatio(skew.full, (e) => e.updateNorm);
    claims.push({
      claim: "(ours) LoRA's skew compares frozen weights with adapters: its embedding and head never change",
      verdict: outer.every((e) => e.updateNorm === 0) ? "supported" : "not supported",
      evidence: `‖θ_t − θ_0‖ of LoRA's embedding and head: ${
        outer.map((e) => f(e.updateNorm)).join(", ")
      }; under full training ` +
        `the same max(embedding, head) / median(block) ratio of updates is ${f(uf, 2)}×`,
    });
  }
  return claims;
}

/** Mean and sample standard deviation. */
export function meanStd(xs: readonly number[]): { mean: number; std: number } {
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  const std = xs.length > 1 ? Math.sqrt(xs.reduce((s, x) => s + (x - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return { mean, std };
}
