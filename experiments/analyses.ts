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

/** Norms as per-layer entries. */
export function skewEntries(n: LayerNorms): SkewEntry[] {
  return n.layers.map((layer, i) => ({
    layer,
    weightNorm: n.weight[i],
    updateNorm: n.update[i],
    ...(n.delta ? { effectiveNorm: layer.startsWith("h.") ? n.delta[i] : n.weight[i] } : {}),
  }));
}

/** max(outer) / median(blocks) of a per-layer quantity: how skewed embedding/head are against the blocks. */
export function skewRatio(entries: readonly SkewEntry[], pick: (e: SkewEntry) => number): number {
  const blocks = entries.filter((e) => e.layer.startsWith("h.")).map(pick).sort((a, b) => a - b);
  const outer = entries.filter((e) => !e.layer.startsWith("h.")).map(pick);
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

/**
 * The paper's claims checked against the default configurations (full, lora = r 8, lisa = E+H+2L);
 * `adapter` names the device in the speed claim's evidence.
 */
export function checkClaims(
  byKey: Record<string, { definitions: RunResult; arithmetic: RunResult }>,
  skew: { full?: SkewEntry[]; lora?: SkewEntry[] },
  adapter = "this adapter",
): Claim[] {
  const { full, lora, lisa } = byKey;
  const claims: Claim[] = [];
  if (full && lora && lisa) {
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
    for (const task of ["definitions", "arithmetic"] as const) {
      const [lf, ll, ls] = [full, lora, lisa].map((r) => r[task].evalLoss);
      const margin = 0.01;
      claims.push({
        claim: `LISA matches or beats full fine-tuning (test loss, ${task})`,
        verdict: ls <= lf + margin ? "supported" : "not supported",
        evidence: `test loss ${f(ls)} (LISA) vs ${f(lf)} (full); "matches" allows ${margin}`,
      });
      claims.push({
        claim: `LISA beats LoRA (test loss, ${task})`,
        verdict: ls < ll ? "supported" : "not supported",
        evidence: `test loss ${f(ls)} (LISA) vs ${f(ll)} (LoRA r=8)`,
      });
    }
    // The paper's speed claim (LISA ~1.5× faster per step than LoRA, ~2.9× than full), on this adapter.
    const [tf, tl, ts] = [full, lora, lisa].map((r) => r.definitions.msPerStep);
    claims.push({
      claim: "LISA's steps are faster than LoRA's and full fine-tuning's (paper: ~1.5× and ~2.9×)",
      verdict: ts < tl && ts < tf ? "supported" : "not supported",
      evidence:
        `ms/step ${f(ts, 0)} (LISA E+H+2L), ${f(tl, 0)} (LoRA r=8), ${f(tf, 0)} (full): LISA ${
          f(tl / ts, 2)
        }× LoRA's speed, ${
          f(tf / ts, 2)
        }× full's, on ${adapter} (wall-clock per step over each read window, ` +
        "definitions task; compiles, evaluations and norm samples excluded)",
    });
    const [af, al, as] = [full, lora, lisa].map((r) => r.arithmetic.accuracy ?? NaN);
    const n = lisa.arithmetic.heldOut;
    // Differences within two binomial standard errors of the held-out set are not evidence.
    const best = Math.max(af, al, as);
    const se = Math.sqrt(Math.max(best * (1 - best), 1 / n) / n);
    const resolved = Math.abs(as - Math.max(af, al)) > 2 * se;
    claims.push({
      claim: "LISA's task accuracy matches or beats LoRA's and full's (arithmetic, exact match)",
      verdict: best === 0 || !resolved
        ? "inconclusive"
        : as >= Math.max(af, al)
        ? "supported"
        : "not supported",
      evidence:
        `accuracy ${f(as * 100, 1)}% (LISA), ${f(al * 100, 1)}% (LoRA), ${
          f(af * 100, 1)
        }% (full) on ${n} held-out test problems` +
        (best === 0
          ? "; every method scored 0: the model is too small and trained too briefly to tell"
          : resolved
          ? ""
          : `; the differences are within two standard errors (${f(2 * se * 100, 1)} points)`),
    });
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
    const outer = skew.lora.filter((e) => !e.layer.startsWith("h."));
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
