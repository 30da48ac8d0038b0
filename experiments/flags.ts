/**
 * Command-line conventions every CLI shares: strict flag parsing, numeric and choice flags checked
 * the same way, an output folder checked writable before any work, and one error line (never a
 * stack trace) when something is wrong.
 */
import { parseArgs } from "node:util";

/** A bad command line: the message names the flag and what it expects. */
export class FlagError extends Error {
  override name = "FlagError";
}

/** A flag's value as an error message shows it: quoted only when empty or holding spaces. */
function shown(v: string): string {
  return v === "" || /\s/.test(v) ? JSON.stringify(v) : v;
}

/** What a numeric flag accepts: any number ≥ 0 (default), or an integer, ≥ 0 or ≥ 1. */
export type FlagKind = "number" | "integer" | "positive integer";

/** `--name v` as a number; throws `--name v: expected …` unless `v` is one of `kind`. */
export function flagNumber(name: string, v: string, kind: FlagKind = "number"): number {
  // Plain decimal only: no hex, no blanks, no "Infinity".
  const n = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(v) ? Number(v) : NaN;
  const ok = kind === "number"
    ? Number.isFinite(n) && n >= 0
    : Number.isSafeInteger(n) && n >= (kind === "integer" ? 0 : 1);
  if (!ok) {
    throw new FlagError(
      `--${name} ${shown(v)}: expected a ${kind === "positive integer" ? kind : `non-negative ${kind}`}`,
    );
  }
  return n;
}

/** `--name v` when `v` is one of `choices`; throws naming the flag and the choices otherwise. */
export function flagChoice<T extends string>(name: string, v: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(v)) {
    const list = choices.length > 1 ? `${choices.slice(0, -1).join(", ")} or ${choices.at(-1)}` : choices[0];
    throw new FlagError(`--${name} ${shown(v)}: expected ${list}`);
  }
  return v as T;
}

/** Flag specifications as `parseArgs` takes them (every flag a string or a boolean). */
export type FlagSpecs = Record<string, { type: "string" | "boolean"; default?: string | boolean }>;

/** Parsed values: strings for string flags, booleans for boolean flags. */
export type FlagValues<S extends FlagSpecs> = {
  [K in keyof S]: S[K]["type"] extends "boolean" ? boolean
    : S[K] extends { default: string } ? string
    : string | undefined;
};

/**
 * Parses `args` against `specs` strictly: an unknown flag, a missing value, a value given to a
 * boolean flag or a positional argument is a {@link FlagError} naming it.
 */
export function parseFlags<S extends FlagSpecs>(args: string[], specs: S): FlagValues<S> {
  try {
    const { values } = parseArgs({ args, options: specs, strict: true, allowPositionals: false });
    const out: Record<string, unknown> = { ...values };
    for (const [k, s] of Object.entries(specs)) if (s.type === "boolean") out[k] = out[k] ?? false;
    return out as FlagValues<S>;
  } catch (e) {
    const code = (e as { code?: string }).code;
    const msg = (e as Error).message;
    const flag = /'(-[^' ]+)/.exec(msg)?.[1] ?? "";
    if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      const known = Object.keys(specs).map((k) => `--${k}`).join(" ");
      throw new FlagError(`${flag}: unknown flag (flags: ${known})`);
    }
    if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
      throw new FlagError(
        msg.includes("does not take") ? `${flag}: takes no value` : `${flag}: needs a value`,
      );
    }
    if (code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL") {
      const arg = /'([^']*)'/.exec(msg)?.[1] ?? "";
      throw new FlagError(`unexpected argument ${JSON.stringify(arg)} (every input is a --flag)`);
    }
    throw new FlagError(msg.split("\n")[0]);
  }
}

/** `values[name]`, or a {@link FlagError} saying `--name` is required. */
export function required(name: string, v: string | undefined): string {
  if (v === undefined || v === "") throw new FlagError(`--${name} is required`);
  return v;
}

/**
 * Creates `dir` (and its parents) and checks a file can be written there, before any work, so a
 * run never fails at its end for want of a place to put its results.
 */
export async function ensureWritableDir(dir: string, flag = "out"): Promise<void> {
  const probe = `${dir}/.write-test-${Deno.pid}`;
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(probe, "");
    await Deno.remove(probe);
  } catch (e) {
    const why = e instanceof Deno.errors.NotCapable
      ? "this task was not given write access there"
      : (e as Error).message.split("\n")[0];
    throw new FlagError(`--${flag} ${dir}: cannot write there (${why})`);
  }
}

/**
 * Runs a CLI's `main`: any error ends the process with one line `name: message` on stderr (and the
 * usage after a {@link FlagError}), exit code 2 for a bad command line and 1 otherwise.
 */
export async function runCli(name: string, usage: string, main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    console.error(`${name}: ${message.split("\n")[0]}`);
    if (e instanceof FlagError) console.error(`usage: ${usage}`);
    Deno.exit(e instanceof FlagError ? 2 : 1);
  }
}
