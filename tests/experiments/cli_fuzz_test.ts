/**
 * Fuzzed command lines: seeded mutations of valid flag lists (unknown, missing, zero, negative, NaN,
 * non-numeric, empty, huge, repeated values, positionals) either parse or fail with one FlagError
 * line naming a flag; and every CLI, run as its task runs it, answers a bad command line with one
 * line and its usage, exit code 2, no stack trace.
 */
import { equal, ok } from "node:assert/strict";
import { parseEvalArgs } from "../../experiments/eval.ts";
import { parseFinetuneArgs } from "../../experiments/finetune.ts";
import { FlagError } from "../../experiments/flags.ts";
import { parsePretrainArgs } from "../../experiments/pretrain.ts";
import { rng, runTask } from "../helpers.ts";

const VALID: [string, (args: string[]) => unknown, string[]][] = [
  ["finetune", parseFinetuneArgs, [
    "--model",
    "m",
    "--data",
    "d.bin",
    "--method",
    "lisa",
    "--steps",
    "10",
    "--block-size",
    "8",
    "--batch-size",
    "2",
    "--lr",
    "1e-3",
    "--gamma",
    "1",
    "--period",
    "2",
    "--checkpoint-every",
    "5",
    "--val-fraction",
    "0.1",
    "--out",
    "o",
  ]],
  ["pretrain", parsePretrainArgs, [
    "--preset",
    "tiny",
    "--steps",
    "10",
    "--checkpoint-every",
    "2",
    "--seed",
    "1",
  ]],
  ["eval", parseEvalArgs, ["--model", "m", "--data", "d.bin", "--block-size", "8", "--batch-size", "4"]],
];

const BAD_VALUES = ["0", "-1", "NaN", "abc", "", "1e999", "2.5", "-0", "0x10", " 3", "Infinity", "1,2"];

/** One seeded mutation of a valid flag list. */
function mutate(args: string[], draw: () => number): string[] {
  const a = [...args];
  const flagAt = () => 2 * Math.floor(draw() * (a.length / 2));
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(draw() * xs.length)];
  switch (Math.floor(draw() * 7)) {
    case 0: // a value replaced
      a[flagAt() + 1] = pick(BAD_VALUES);
      break;
    case 1: // a flag and its value dropped
      a.splice(flagAt(), 2);
      break;
    case 2: // an unknown flag
      a.splice(flagAt(), 0, pick(["--bogus", "--step", "-x", "--lr2"]), "1");
      break;
    case 3: // a value dropped (the next flag becomes the value, or the list ends)
      a.splice(flagAt() + 1, 1);
      break;
    case 4: // a positional argument
      a.push(pick(["extra", "10", "-"]));
      break;
    case 5: // a flag repeated with another value
      a.push(a[flagAt()], pick(BAD_VALUES));
      break;
    default: // a value given to a boolean flag, or a flag with =
      a.push(pick(["--quiet=yes", "--resume=1", "--steps=", "--lr=-3"]));
  }
  return a;
}

Deno.test("seeded command-line mutations parse or fail with one FlagError line naming a flag", () => {
  let tried = 0, parsed = 0;
  for (const [name, parse, valid] of VALID) {
    parse(valid); // the unmutated list is valid
    const draw = rng(name.length * 7919);
    for (let i = 0; i < 200; i++) {
      const args = mutate(valid, draw);
      tried++;
      try {
        parse(args);
        parsed++;
      } catch (e) {
        ok(
          e instanceof FlagError,
          `${name} ${JSON.stringify(args)}: ${(e as Error).name}: ${(e as Error).message}`,
        );
        ok(!e.message.includes("\n"), `${name} ${JSON.stringify(args)}: one line: ${e.message}`);
        ok(/--[a-z]|argument/.test(e.message), `${name} ${JSON.stringify(args)}: names a flag: ${e.message}`);
      }
    }
  }
  console.log(
    `fuzz: ${tried} command lines, ${parsed} parsed, ${tried - parsed} refused with a flag error, 0 crashes`,
  );
});

Deno.test({
  name: "each CLI, run as its task runs it, answers a bad command line with one line and its usage (exit 2)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const cases: [string, string, string[], RegExp][] = [
      ["eval", "experiments/eval.ts", ["--bogus"], /^eval: --bogus: unknown flag/],
      ["eval", "experiments/eval.ts", ["--model", "m", "--data", "d"], /^eval: --block-size is required/],
      ["finetune", "experiments/finetune.ts", ["--steps", "0"], /^finetune: --model is required/],
      [
        "pretrain",
        "experiments/pretrain.ts",
        ["--steps", "x"],
        /^pretrain: --steps x: expected a positive integer/,
      ],
      [
        "pretrain",
        "experiments/pretrain.ts",
        ["--preset", "huge"],
        /^pretrain: --preset huge: expected tiny/,
      ],
      [
        "memory",
        "experiments/memory.ts",
        ["--batch", "x"],
        /^memory: --batch x: expected a positive integer/,
      ],
      ["experiment", "experiments/main.ts", ["--seed", "NaN"], /^experiment: --seed NaN: expected/],
      ["bench", "experiments/bench.ts", ["--filter"], /^bench: --filter: needs a value/],
    ];
    for (const [task, script, args, want] of cases) {
      const r = await runTask(task, script, args);
      equal(r.code, 2, `${task} ${args.join(" ")}: exit code (stderr: ${r.stderr})`);
      const lines = r.stderr.split("\n");
      equal(
        lines.length,
        2,
        `${task} ${args.join(" ")}: the error and the usage, nothing else:\n${r.stderr}`,
      );
      ok(want.test(lines[0]), `${task}: ${lines[0]}`);
      ok(lines[1].startsWith("usage: deno task"), lines[1]);
      equal(r.stdout, "", "no partial output");
    }
    // A good command line with a model that is not there: one line, exit 1.
    const r = await runTask("eval", "experiments/eval.ts", [
      "--model",
      "/nonexistent/model",
      "--data",
      "d.bin",
      "--block-size",
      "8",
    ]);
    equal(r.code, 1);
    equal(r.stderr.split("\n").length, 1, r.stderr);
    ok(r.stderr.startsWith("eval: ") && r.stderr.includes("/nonexistent/model"), r.stderr);
  },
});
