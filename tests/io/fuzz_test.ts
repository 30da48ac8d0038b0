import { equal, throws } from "node:assert/strict";
import {
  encodeSafetensors,
  MAX_HEADER_BYTES,
  readSafetensorsFile,
  type SafeDType,
  Safetensors,
  SafetensorsError,
} from "../../core/io/safetensors.ts";
import { CheckpointError, loadGPT2 } from "../../core/io/hf.ts";
import { concat, Draw, FuzzTally, type Mutant, mutateBytes, mutateJsonText } from "../fuzz.ts";
import { gpuTest } from "../helpers.ts";

const fixture = (style: string, file: string) =>
  new URL(`../fixtures/gpt2_tiny/${style}/${file}`, import.meta.url).pathname;

/** A safetensors file from a header and a data section, with the header length given or true. */
function raw(header: unknown, data: Uint8Array, headerLength?: bigint): Uint8Array {
  const h = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** The header object and data section of a well-formed file. */
function split(bytes: Uint8Array): { header: unknown; data: Uint8Array; headerEnd: number } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  return { header, data: bytes.subarray(8 + n), headerEnd: 8 + n };
}

const HEADER_LENGTHS = [0n, 1n, 2n, 7n, 2n ** 32n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n];

/** One seeded mutation of a safetensors file: its header as JSON, its length field, or its bytes. */
function mutateSafetensors(d: Draw, bytes: Uint8Array): Mutant<Uint8Array> {
  const { header, data, headerEnd } = split(bytes);
  const kind = d.int(20);
  if (kind < 8) {
    const m = mutateJsonText(d, header);
    const keepLength = d.chance(0.1) ? BigInt(headerEnd - 8) : undefined;
    return { value: raw(m.value, data, keepLength), what: `header: ${m.what}` };
  }
  if (kind < 11) {
    const n = d.chance(0.5)
      ? d.pick(HEADER_LENGTHS)
      : BigInt(Math.max(0, headerEnd - 8 + d.pick([-1, 1, -8, 8, data.length, data.length + 1])));
    const out = bytes.slice();
    new DataView(out.buffer).setBigUint64(0, n, true);
    return { value: out, what: `header length set to ${n}` };
  }
  if (kind < 15) {
    const m = mutateBytes(d, bytes, 0, headerEnd);
    return { value: m.value, what: `header bytes: ${m.what}` };
  }
  if (kind < 18) {
    const m = mutateBytes(d, bytes, headerEnd, bytes.length);
    return { value: m.value, what: `data bytes: ${m.what}` };
  }
  const m = mutateBytes(d, bytes);
  return { value: m.value, what: `bytes: ${m.what}` };
}

const FLOAT: ReadonlySet<SafeDType> = new Set(["F32", "F16", "BF16", "F64"]);

/** A small file with every readable dtype, an integer tensor, an empty tensor and metadata. */
function mixedFile(): Uint8Array {
  const parts: [string, SafeDType, number[], Uint8Array][] = [
    ["a.weight", "F32", [2, 3], new Uint8Array(new Float32Array([1, -2, 3.5, 0, 1e-3, -7]).buffer)],
    ["half", "F16", [4], new Uint8Array(new Uint16Array([0x3c00, 0xc000, 0x3555, 0x0001]).buffer)],
    ["brain", "BF16", [2], new Uint8Array(new Uint16Array([0x3f80, 0xc0a0]).buffer)],
    ["double", "F64", [1], new Uint8Array(new Float64Array([0.25]).buffer)],
    ["ids", "I64", [2], new Uint8Array(16)],
    ["empty", "F32", [0, 4], new Uint8Array(0)],
    ["mask", "BOOL", [3], new Uint8Array([1, 0, 1])],
  ];
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let at = 0;
  for (const [name, dtype, shape, bytes] of parts) {
    header[name] = { dtype, shape, data_offsets: [at, at + bytes.length] };
    at += bytes.length;
  }
  return raw(header, concat(...parts.map((p) => p[3])));
}

/** Every readable tensor of a parsed file reads as f32 of its shape's size; the others refuse cleanly. */
function readsBack(st: Safetensors): void {
  for (const [name, e] of st.entries) {
    if (!FLOAT.has(e.dtype)) {
      throws(() => st.getF32(name), SafetensorsError);
      continue;
    }
    const n = e.shape.reduce((p, x) => p * x, 1);
    equal(st.getF32(name).length, n, `${name} reads ${n} values`);
  }
}

Deno.test("fuzz: mutated safetensors files parse or fail with one line naming the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lisa-fuzz-" });
  try {
    const bases = [mixedFile(), await Deno.readFile(fixture("bare", "model.safetensors"))];
    const tally = new FuzzTally("safetensors");
    const path = `${dir}/model.safetensors`;
    for (let seed = 1; seed <= 300; seed++) {
      const d = new Draw(seed);
      const m = mutateSafetensors(d, bases[seed % 2]);
      await Deno.writeFile(path, m.value);
      await tally.run(`seed ${seed} (${m.what})`, "model.safetensors", () => readSafetensorsFile(path), [
        SafetensorsError,
      ], readsBack);
    }
    console.log(tally.summary());
    equal(tally.crashes.length, 0, tally.crashes.join("\n"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

gpuTest("fuzz: mutated GPT-2 directories load or fail with one line naming the file", async (gpu) => {
  const dir = await Deno.makeTempDir({ prefix: "lisa-fuzz-" });
  try {
    const config = JSON.parse(await Deno.readTextFile(fixture("bare", "config.json")));
    const weights = {
      bare: await Deno.readFile(fixture("bare", "model.safetensors")),
      transformer: await Deno.readFile(fixture("transformer", "model.safetensors")),
    };
    const loads = async (loaded: { model: import("../../core/nn/gpt.ts").GPT }) => {
      const params = loaded.model.namedParameters();
      const reads = params.map(([, t]) => t.read());
      await gpu.submit();
      for (let i = 0; i < params.length; i++) {
        const values = await reads[i];
        const bad = values.findIndex((x) => !Number.isFinite(x));
        if (bad >= 0) throw new Error(`${params[i][0]} holds ${values[bad]} at ${bad}`);
      }
      loaded.model.dispose();
    };
    const weightsBefore = gpu.memory.stats().live.weights;
    for (const kind of ["config.json", "model.safetensors"] as const) {
      const tally = new FuzzTally(`GPT-2 ${kind}`);
      for (let seed = 1; seed <= 100; seed++) {
        const d = new Draw(seed);
        const style = d.pick(["bare", "transformer"] as const);
        let what: string;
        if (kind === "config.json") {
          const m = mutateJsonText(d, config);
          what = m.what;
          await Deno.writeTextFile(`${dir}/config.json`, m.value);
          await Deno.writeFile(`${dir}/model.safetensors`, weights[style]);
        } else {
          const m = mutateSafetensors(d, weights[style]);
          what = m.what;
          await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
          await Deno.writeFile(`${dir}/model.safetensors`, m.value);
        }
        const label = `seed ${seed} ${style} (${what})`;
        await tally.run(label, kind, () => loadGPT2(gpu, dir), [CheckpointError, SafetensorsError], loads);
        const left = gpu.memory.stats().live.weights - weightsBefore;
        if (left !== 0) tally.crashes.push(`${label}: left ${left} bytes of weights allocated`);
      }
      console.log(tally.summary());
      equal(tally.crashes.length, 0, tally.crashes.join("\n"));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Parsing `bytes` fails with a SafetensorsError of one line naming the file and matching `re`. */
function rejects(bytes: Uint8Array, re: RegExp): void {
  let error: Error | null = null;
  try {
    new Safetensors(bytes, "f.safetensors");
  } catch (e) {
    error = e as Error;
  }
  if (!error) throw new Error(`parsed, expected ${re}`);
  equal(error.constructor, SafetensorsError, error.stack);
  equal(error.message.includes("\n"), false, error.message);
  equal(error.message.includes("f.safetensors"), true, error.message);
  equal(re.test(error.message), true, `${error.message} does not match ${re}`);
}

Deno.test("hand-written safetensors edge cases are rejected in one line", () => {
  const f32 = (shape: number[], data_offsets: unknown) => ({ a: { dtype: "F32", shape, data_offsets } });
  const data = new Uint8Array(16);
  rejects(new Uint8Array(0), /file is 0 bytes, shorter than the 8-byte header length/);
  rejects(raw({}, data, 0n), /header length is 0/);
  rejects(raw({}, data, 9999999n), /header length 9999999 runs past the end of the file \(26 bytes\)/);
  rejects(raw({}, data, 2n ** 64n - 1n), /header length 18446744073709551615 runs past the end/);
  rejects(raw({}, data, 2n ** 53n), /header length 9007199254740992 runs past the end/);
  const huge = new Uint8Array(8 + MAX_HEADER_BYTES + 1);
  new DataView(huge.buffer).setBigUint64(0, BigInt(MAX_HEADER_BYTES + 1), true);
  rejects(huge, /header length 100000001 is over the 100000000-byte limit/);
  rejects(raw('{\n  "a": [1,\n', data), /header is not valid JSON \(.*\)$/);
  const badUtf8 = raw("{}", data);
  badUtf8[8] = 0xff;
  rejects(badUtf8, /header is not valid UTF-8/);
  rejects(raw(null, data), /header is not a JSON object/);
  rejects(raw({ __metadata__: ["x"] }, data), /__metadata__ is not an object/);
  rejects(raw({ __metadata__: { "a\nb": 1 } }, data), /__metadata__\."a\\nb" is not a string/);
  rejects(
    raw({ a: { dtype: "Q4", shape: [1], data_offsets: [0, 1] } }, data),
    /tensor a: unknown dtype "Q4"/,
  );
  rejects(
    raw({ a: { dtype: "toString", shape: [1], data_offsets: [0, 1] } }, data),
    /unknown dtype "toString"/,
  );
  rejects(raw({ "x\ny": { dtype: "Q4" } }, data), /tensor "x\\ny": unknown dtype/);
  rejects(
    raw(f32([1], [-4, 0]), data),
    /tensor a: data_offsets \[-4,0\] is not a pair of non-negative integers/,
  );
  rejects(raw(f32([1], [0, 2 ** 60]), data), /data_offsets \[0,1152921504606847000\] is not a pair/);
  rejects(raw(f32([1], [0, 4, 8]), data), /data_offsets \[0,4,8\] is not a pair/);
  rejects(raw(f32([1], [12, 8]), data), /data_offsets \[12, 8\] end before they begin/);
  rejects(raw(f32([8], [0, 32]), data), /data_offsets \[0, 32\] run past the data section \(16 bytes\)/);
  rejects(
    raw(f32([2 ** 26, 2 ** 26, 2 ** 26], [0, 16]), data),
    /needs 1\.2\d+e\+24 bytes, more than the data/,
  );
  rejects(raw(f32([2 ** 60], [0, 16]), data), /shape \[1152921504606847000\] is not a list of non-negative/);
  rejects(raw(f32([1.5], [0, 16]), data), /shape \[1\.5\] is not a list/);
  rejects(
    raw({
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
    }, data),
    /tensors a \[0,8\] and b \[4,12\] overlap/,
  );
  const ok = new Safetensors(
    raw({
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      none: { dtype: "F32", shape: [0], data_offsets: [4, 4] },
    }, data),
  );
  equal(ok.getF32("none").length, 0, "an empty tensor overlaps nothing");
});

gpuTest(
  "hand-written GPT-2 config and weight edge cases are rejected before the model is allocated",
  async (gpu) => {
    const dir = await Deno.makeTempDir({ prefix: "lisa-fuzz-" });
    try {
      const config = JSON.parse(await Deno.readTextFile(fixture("bare", "config.json")));
      const good = new Safetensors(await Deno.readFile(fixture("bare", "model.safetensors")));
      const tensors = () =>
        Object.fromEntries(
          good.names().map((n) => [n, { shape: good.entries.get(n)!.shape, data: good.getF32(n) }]),
        );
      const before = gpu.memory.stats().live.weights;
      const bad = async (cfg: unknown, st: Uint8Array | Record<string, unknown>, re: RegExp) => {
        await Deno.writeTextFile(`${dir}/config.json`, typeof cfg === "string" ? cfg : JSON.stringify(cfg));
        await Deno.writeFile(
          `${dir}/model.safetensors`,
          st instanceof Uint8Array ? st : encodeSafetensors(st as Parameters<typeof encodeSafetensors>[0]),
        );
        const error = await loadGPT2(gpu, dir).then(() => null, (e: Error) => e);
        if (!error) throw new Error(`loaded, expected ${re}`);
        equal(
          error.constructor === CheckpointError || error.constructor === SafetensorsError,
          true,
          error.stack,
        );
        equal(error.message.includes("\n"), false, error.message);
        equal(re.test(error.message), true, `${error.message} does not match ${re}`);
        equal(gpu.memory.stats().live.weights, before, "nothing is left allocated");
      };
      const t = tensors();
      await bad(
        { ...config, n_layer: undefined },
        t,
        /config\.json: n_layer is undefined, expected a positive/,
      );
      await bad(
        { ...config, vocab_size: 0 },
        t,
        /config\.json: vocab_size is 0, expected a positive integer/,
      );
      await bad({ ...config, n_head: 3 }, t, /config\.json: GPT config: n_embd 16 must split into 3 heads/);
      await bad({ ...config, n_embd: "16" }, t, /config\.json: n_embd is "16", expected a positive integer/);
      await bad(
        { ...config, n_embd: 2 ** 60 },
        t,
        /n_embd is 1152921504606847000, beyond 2\^53/,
      );
      await bad('{"n_embd": NaN}', t, /config\.json: not valid JSON \(/);
      await bad(JSON.stringify(config).replace('"n_embd":16', '"n_embd":1e999'), t, /n_embd is Infinity/);
      await bad({ ...config, layer_norm_epsilon: -1 }, t, /layer_norm_epsilon -1 is not a positive number/);
      await bad({ ...config, n_inner: 7 }, t, /config\.json: n_inner 7 is not 4·n_embd \(64\)/);
      await bad([config], t, /config\.json: not a JSON object/);
      await bad(
        { ...config, n_layer: 1_000_000 },
        t,
        /model\.safetensors: missing tensor h\.2\.ln_1\.weight \(config\.json has n_layer 1000000\)/,
      );
      await bad(
        { ...config, vocab_size: 1_000_000_000 },
        t,
        /model\.safetensors: wte\.weight has shape \[61,16\], expected \[1000000000,16\] for this config\.json/,
      );
      const nan = tensors();
      nan["h.0.ln_1.weight"].data[3] = NaN;
      await bad(config, nan, /model\.safetensors: h\.0\.ln_1\.weight holds NaN at element 3/);
      const inf = tensors();
      inf["wpe.weight"].data[0] = -Infinity;
      await bad(config, inf, /wpe\.weight holds -Infinity at element 0/);
      const both = { ...tensors(), "transformer.wte.weight": t["wte.weight"] };
      await bad(config, both, /tensors wte\.weight and transformer\.wte\.weight are the same parameter/);
      await bad(
        config,
        { ...t, "lm_head.weight": { shape: [16, 61], data: new Float32Array(61 * 16) } },
        /lm_head\.weight has shape \[16,61\], expected \[61,16\] \(the tied head is wte\.weight\)/,
      );
      const { header, data } = split(encodeSafetensors(t));
      (header as Record<string, { dtype: string }>)["ln_f.bias"].dtype = "I32";
      await bad(config, raw(header, data), /ln_f\.bias is I32; weights are F32, F16, BF16 or F64/);
      await bad(config, new Uint8Array(0), /model\.safetensors: file is 0 bytes/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
