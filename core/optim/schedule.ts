/** Learning-rate schedules: constant, and linear warmup then cosine decay (nanoGPT's). */

/** A schedule: learning rate at step (0-based). */
export type Schedule = (step: number) => number;

/** Settings of {@link makeSchedule}. */
export interface ScheduleOptions {
  /** `constant` or `cosine` (linear warmup, then cosine decay to minLr). */
  kind: "constant" | "cosine";
  /** Peak learning rate. */
  lr: number;
  /** Warmup steps (linear from lr/warmup to lr); default 0. */
  warmup?: number;
  /** Steps over which cosine decays (the run's length). */
  total?: number;
  /** Floor of the cosine (default lr/10). */
  minLr?: number;
}

/** The schedule described by `o`; throws on inconsistent settings. */
export function makeSchedule(o: ScheduleOptions): Schedule {
  const warmup = o.warmup ?? 0;
  if (!(o.lr > 0)) throw new Error(`schedule: lr = ${o.lr} must be positive`);
  if (!Number.isInteger(warmup) || warmup < 0) {
    throw new Error(`schedule: warmup = ${warmup} must be an integer ≥ 0`);
  }
  const warm = (s: number) => (o.lr * (s + 1)) / warmup;
  if (o.kind === "constant") return (s) => (s < warmup ? warm(s) : o.lr);
  const total = o.total ?? 0;
  if (!(total > warmup)) throw new Error(`schedule: cosine needs total (${total}) > warmup (${warmup})`);
  const minLr = o.minLr ?? o.lr / 10;
  return (s) => {
    if (s < warmup) return warm(s);
    const t = Math.min(1, (s - warmup) / (total - warmup));
    return minLr + 0.5 * (1 + Math.cos(Math.PI * t)) * (o.lr - minLr);
  };
}
