/**
 * User data files: `.txt` (the whole file is one document), `.jsonl` (one object per line: `text`
 * for a document, or `prompt` and `response` for an example with loss on the response only), and
 * nanoGPT's `.bin` (little-endian uint16 token ids). Errors are one line naming the file and, for
 * JSONL, the line. Blank (or whitespace-only) JSONL lines are skipped, as `datasets` and most JSONL
 * writers allow (a trailing newline makes one). A file must give at least one input and its target:
 * 2 tokens in a stream, 2 ids in every example.
 */
import { getHost } from "../host.ts";
import { encodeDocuments, type Tokenizer } from "./tokenizer.ts";

/** A prompt/response pair as ids, with `mask` 1 on the ids that are targets whose loss counts. */
export interface Example {
  /** Prompt ids, then response ids, then the end-of-text id when the tokenizer has one. */
  ids: Uint32Array;
  /** 1 where the id is part of the response (end-of-text included), 0 on the prompt. */
  mask: Uint8Array;
}

/** A loaded data set: one token stream, or a list of prompt/response examples. */
export type Dataset =
  | { kind: "stream"; tokens: Uint32Array }
  | { kind: "examples"; examples: Example[] };

const FORMATS = ".txt (one document), .jsonl (a `text` or `prompt`+`response` object per line) " +
  "or .bin (nanoGPT uint16 token ids)";

/** The data set in the file at `path`; token ids are checked against the model's `vocabSize`. */
export async function loadDataset(
  path: string,
  tokenizer: Tokenizer | null,
  vocabSize: number,
): Promise<Dataset> {
  formatOf(path); // an unknown extension fails before the read
  let bytes: Uint8Array;
  try {
    bytes = await getHost().readFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read data file (${oneLine((e as Error).message)})`, { cause: e });
  }
  return parseDataset(path, bytes, tokenizer, vocabSize);
}

/** The data set in `bytes`, read as the format `path`'s extension names (`path` also labels errors). */
export function parseDataset(
  path: string,
  bytes: Uint8Array,
  tokenizer: Tokenizer | null,
  vocabSize: number,
): Dataset {
  const format = formatOf(path);
  if (bytes.length === 0) throw new Error(`${path}: the file is empty`);
  if (format === "bin") return checkStream(path, parseBin(path, bytes, vocabSize));
  if (tokenizer === null) {
    throw new Error(
      `${path}: text data needs a tokenizer, and the model's vocabulary (${vocabSize}) has none; ` +
        `give token ids as a .bin file instead`,
    );
  }
  if (tokenizer.vocabSize > vocabSize) {
    throw new Error(
      `${path}: the ${tokenizer.name} tokenizer's ids go up to ${tokenizer.vocabSize - 1}, ` +
        `beyond the model's vocabulary size ${vocabSize}`,
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new Error(`${path}: not valid UTF-8 text`);
  }
  if (format === "txt") return checkStream(path, Uint32Array.from(tokenizer.encode(text)));
  return parseJsonl(path, text, tokenizer);
}

function checkStream(path: string, tokens: Uint32Array): Dataset {
  if (tokens.length < 2) {
    throw new Error(
      `${path}: ${tokens.length} token(s); a stream needs at least 2 (an input and its target)`,
    );
  }
  return { kind: "stream", tokens };
}

/** `message` on one line: runs of whitespace (newlines included) become one space. */
function oneLine(message: string): string {
  return message.replace(/\s+/g, " ").trim();
}

/** Whether the file at `path` is text that needs a tokenizer (`.txt`, `.jsonl`), not `.bin` ids. */
export function needsTokenizer(path: string): boolean {
  return formatOf(path) !== "bin";
}

function formatOf(path: string): "txt" | "jsonl" | "bin" {
  const ext = /\.[^./\\]+$/.exec(path)?.[0].toLowerCase() ?? "";
  if (ext === ".txt") return "txt";
  if (ext === ".jsonl") return "jsonl";
  if (ext === ".bin") return "bin";
  throw new Error(`${path}: unknown data format ${ext ? `'${ext}'` : "(no extension)"}; use ${FORMATS}`);
}

function parseBin(path: string, bytes: Uint8Array, vocabSize: number): Uint32Array {
  if (bytes.length % 2 !== 0) {
    throw new Error(
      `${path}: ${bytes.length} bytes is not a whole number of uint16 token ids (2 bytes each)`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tokens = new Uint32Array(bytes.length / 2);
  for (let i = 0; i < tokens.length; i++) {
    const id = view.getUint16(2 * i, true);
    if (id >= vocabSize) {
      throw new Error(
        `${path}: token ${i} (byte offset ${2 * i}) is id ${id}, ` +
          `not below the model's vocabulary size ${vocabSize}`,
      );
    }
    tokens[i] = id;
  }
  return tokens;
}

function parseJsonl(path: string, text: string, tokenizer: Tokenizer): Dataset {
  const documents: string[] = [];
  const examples: Example[] = [];
  let first: { kind: "text" | "prompt/response"; line: number } | null = null;
  const lines = text.split("\n");
  for (let n = 1; n <= lines.length; n++) {
    const line = lines[n - 1].trim();
    if (line === "") continue;
    const where = `${path} line ${n}`;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new Error(`${where}: bad JSON (${oneLine((e as Error).message)})`);
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new Error(
        `${where}: expected a JSON object, got ${Array.isArray(value) ? "an array" : typeof value}`,
      );
    }
    const o = value as Record<string, unknown>;
    const isText = typeof o.text === "string";
    const isPair = typeof o.prompt === "string" && typeof o.response === "string";
    if (isText === isPair) {
      throw new Error(
        isText
          ? `${where}: has both "text" and "prompt"/"response"; give one or the other`
          : `${where}: needs a string "text" field, or string "prompt" and "response" fields`,
      );
    }
    const kind = isText ? "text" : "prompt/response";
    first ??= { kind, line: n };
    if (kind !== first.kind) {
      throw new Error(
        `${where}: a ${kind} line, but line ${first.line} is a ${first.kind} line; one file holds one kind`,
      );
    }
    if (isText) {
      documents.push(o.text as string);
    } else {
      const example = encodeExample(o.prompt as string, o.response as string, tokenizer);
      if (!example.mask.includes(1)) throw new Error(`${where}: "response" is empty, so nothing is a target`);
      if (example.ids.length < 2) {
        throw new Error(
          `${where}: prompt and response make ${example.ids.length} token; an example needs at least 2 (an input and its target)`,
        );
      }
      examples.push(example);
    }
  }
  if (first === null) throw new Error(`${path}: no JSON lines`);
  if (first.kind === "prompt/response") return { kind: "examples", examples };
  return checkStream(path, encodeDocuments(tokenizer, documents));
}

/** Ids and loss mask of one prompt/response pair: prompt ++ response ++ [eot], mask 1 after the prompt. */
export function encodeExample(prompt: string, response: string, tokenizer: Tokenizer): Example {
  const p = tokenizer.encode(prompt);
  const r = tokenizer.encode(response);
  if (tokenizer.eot !== null) r.push(tokenizer.eot);
  const ids = new Uint32Array(p.length + r.length);
  ids.set(p);
  ids.set(r, p.length);
  const mask = new Uint8Array(ids.length);
  mask.fill(1, p.length);
  return { ids, mask };
}
