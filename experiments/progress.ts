/** A progress line on stderr: redrawn in place on a terminal, printed every so often otherwise. */

/** Formats seconds as `1m23s` / `45s`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

/** Reports `done / total` units with a message; ETA from the average rate so far. */
export class Progress {
  readonly #total: number;
  readonly #label: string;
  readonly #tty: boolean;
  readonly #every: number;
  readonly #start: number;
  readonly #t0 = performance.now();
  #lastLine = 0;

  /** A progress report for `total` units named `label`, `start` of them done before (a resume). */
  constructor(label: string, total: number, start = 0) {
    this.#label = label;
    this.#total = total;
    this.#start = start;
    this.#lastLine = start;
    this.#tty = Deno.stderr.isTerminal();
    this.#every = Math.max(1, Math.round(total / 20));
  }

  /** Reports that `done` units are finished; `detail` is appended (e.g. `loss 2.31`). */
  update(done: number, detail = ""): void {
    const elapsed = (performance.now() - this.#t0) / 1000;
    const eta = done > this.#start ? (elapsed / (done - this.#start)) * (this.#total - done) : NaN;
    const width = 20;
    const filled = Math.round((width * done) / this.#total);
    const bar = "#".repeat(filled) + "-".repeat(width - filled);
    const line = `${this.#label} [${bar}] ${done}/${this.#total} ${detail} ETA ${formatDuration(eta)}`;
    if (this.#tty) {
      Deno.stderr.writeSync(new TextEncoder().encode(`\r${line}\x1b[K${done === this.#total ? "\n" : ""}`));
    } else if (done === this.#total || done - this.#lastLine >= this.#every) {
      console.error(line);
      this.#lastLine = done;
    }
  }

  /** Reports training step `r` (so `r.step + 1` steps done) with its loss, learning rate and tokens/s. */
  step(r: { step: number; loss: number; lr: number; ms: number }, tokensPerStep: number): void {
    const tps = r.ms > 0 ? Math.round(tokensPerStep / (r.ms / 1000)) : 0;
    this.update(r.step + 1, `loss ${r.loss.toFixed(4)} lr ${r.lr.toExponential(2)} ${tps} tok/s`);
  }

  /** Prints a message on its own line without breaking the bar. */
  note(message: string): void {
    if (this.#tty) Deno.stderr.writeSync(new TextEncoder().encode(`\r\x1b[K`));
    console.error(message);
  }
}
