/** Numeric command-line flags, checked the same way by every CLI. */

/** What a numeric flag accepts: any number ≥ 0 (default), or an integer, ≥ 0 or ≥ 1. */
export type FlagKind = "number" | "integer" | "positive integer";

/** `--name v` as a number; throws `--name v: expected …` unless `v` is one of `kind`. */
export function flagNumber(name: string, v: string, kind: FlagKind = "number"): number {
  const n = Number(v);
  const ok = kind === "number"
    ? Number.isFinite(n) && n >= 0
    : Number.isInteger(n) && n >= (kind === "integer" ? 0 : 1);
  if (!ok) {
    throw new Error(
      `--${name} ${v}: expected a ${kind === "positive integer" ? kind : `non-negative ${kind}`}`,
    );
  }
  return n;
}
