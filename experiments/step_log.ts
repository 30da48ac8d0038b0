/**
 * The step history of a resumable CLI run (pretrain, finetune): checked when read back from a
 * checkpoint, and appended to `steps.jsonl` once per read window, so a crash loses no step that
 * was read.
 */
import type { StepRecord } from "../core/finetune/trainer.ts";
import { CheckpointError } from "../core/io/hf.ts";
import { writeFileAtomic } from "../core/io/safetensors.ts";

/**
 * The first `step` records of a checkpoint's history; a {@link CheckpointError} naming `file` when
 * they are not steps 0 … step−1 with finite losses.
 */
export function historyUpTo(file: string, history: unknown, step: number): StepRecord[] {
  const h = history as StepRecord[];
  if (
    !Array.isArray(h) || h.length < step ||
    h.slice(0, step).some((r, i) => r?.step !== i || !Number.isFinite(r.loss))
  ) {
    throw new CheckpointError(`${file}: extra.history does not hold steps 0–${step - 1}`);
  }
  return h.slice(0, step);
}

/** Every step record of a run, in memory and (when it has a file) in steps.jsonl. */
export class StepLog<Line = StepRecord> {
  /** Every record so far, the resumed history first. */
  readonly records: StepRecord[];
  readonly #file: string | null;
  readonly #line: (r: StepRecord) => Line;
  #unwritten: StepRecord[] = [];

  private constructor(file: string | null, history: StepRecord[], line: (r: StepRecord) => Line) {
    this.#file = file;
    this.#line = line;
    this.records = [...history];
  }

  /**
   * A log starting from `history`; `file` (if any) is rewritten to hold exactly it (a resumed run
   * drops lines of steps after its checkpoint). `line` is a record's form in the file.
   */
  static async open<Line>(
    file: string | null,
    history: StepRecord[],
    line: (r: StepRecord) => Line,
  ): Promise<StepLog<Line>> {
    const log = new StepLog(file, history, line);
    if (file) await writeFileAtomic(file, log.#lines(history));
    return log;
  }

  /** Records a step (the trainer's `onStep`). */
  add(r: StepRecord): void {
    this.records.push(r);
    this.#unwritten.push(r);
  }

  /** Appends the steps added since the last call to the file (the trainer's `afterStep`). */
  async flush(): Promise<void> {
    const batch = this.#unwritten;
    this.#unwritten = [];
    if (this.#file && batch.length) {
      await Deno.writeTextFile(this.#file, this.#lines(batch), { append: true });
    }
  }

  #lines(rs: StepRecord[]): string {
    return rs.map((r) => JSON.stringify(this.#line(r)) + "\n").join("");
  }
}
