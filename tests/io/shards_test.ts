import { deepEqual, equal, match, ok, throws } from "node:assert/strict";
import {
  encodeSafetensors,
  f16ToF32,
  type F32Tensor,
  f32ToBF16,
  f32ToF16,
  Safetensors,
  SafetensorsError,
} from "../../core/io/safetensors.ts";
import {
  encodeShardedSafetensors,
  INDEX_FILE,
  readShardedSafetensors,
  SINGLE_FILE,
} from "../../core/io/shards.ts";
import { writeSafetensorsLayout } from "../../core/io/hf.ts";
import { Draw, FuzzTally, mutateJsonText } from "../fuzz.ts";

const bits32 = (u: number) => new Float32Array(new Uint32Array([u]).buffer)[0];
const hex = (xs: number[]) => xs.map((x) => `0x${x.toString(16).padStart(4, "0")}`);

Deno.test("f32 → F16 rounds to nearest even, with subnormals, overflow to Inf, NaN and ±Inf kept", () => {
  const cases: [number, number][] = [
    [1, 0x3c00],
    [-2.5, 0xc100],
    [65504, 0x7bff],
    [65519, 0x7bff],
    [65520, 0x7c00], // halfway to 2^16: the even neighbour is Inf
    [1e-8, 0x0000], // below 2^-25, half the smallest subnormal
    [-1e-8, 0x8000],
    [1e-7, 0x0002], // 1e-7 / 2^-24 ≈ 1.68
    [2 ** -24, 0x0001],
    [2 ** -25, 0x0000], // a tie between 0 and 2^-24: to even, 0
    [3 * 2 ** -25, 0x0002], // a tie between 1 and 2 units: to even, 2
    [2 ** -14, 0x0400],
    [1 + 2 ** -11, 0x3c00], // tie, down to even
    [1 + 3 * 2 ** -11, 0x3c02], // tie, up to even
    [NaN, 0x7e00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [-0, 0x8000],
  ];
  deepEqual(hex(cases.map(([x]) => f32ToF16(x))), hex(cases.map(([, h]) => h)));
});

Deno.test("f32 → BF16 keeps the top 16 bits rounded to nearest even, NaN and ±Inf kept", () => {
  const cases: [number, number][] = [
    [1, 0x3f80],
    [-2.5, 0xc020],
    [bits32(0x3f808000), 0x3f80], // tie, down to even
    [bits32(0x3f818000), 0x3f82], // tie, up to even
    [bits32(0x3f808001), 0x3f81], // just past the tie
    [65504, 0x4780],
    [bits32(0x7f7fffff), 0x7f80], // the largest f32 rounds to Inf
    [Infinity, 0x7f80],
    [-Infinity, 0xff80],
    [bits32(0x7f800001), 0x7fc0], // a NaN whose payload sits in the low bits stays NaN
    [bits32(0xffc00000), 0xffc0],
  ];
  deepEqual(hex(cases.map(([x]) => f32ToBF16(x))), hex(cases.map(([, h]) => h)));
  ok(Number.isNaN(f16ToF32(f32ToF16(NaN))));
});

Deno.test("F16 and BF16 written by encodeSafetensors read back within the format's precision", () => {
  let s = 12345;
  const rand = () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const data = Float32Array.from({ length: 2000 }, () => (rand() - 0.5) * 2 ** (rand() * 30 - 14));
  const st = new Safetensors(encodeSafetensors({
    h: { shape: [2000], data, dtype: "F16" },
    b: { shape: [2000], data, dtype: "BF16" },
    f: { shape: [2000], data },
  }));
  deepEqual([...st.entries.values()].map((e) => e.dtype), ["F16", "BF16", "F32"]);
  deepEqual(st.getF32("f"), data);
  const [h, b] = [st.getF32("h"), st.getF32("b")];
  for (let i = 0; i < data.length; i++) {
    const x = data[i];
    // Half a unit in the last place: 2^-11 relative for F16 normals (2^-25 below 2^-14), 2^-8 for BF16.
    ok(Math.abs(h[i] - x) <= Math.max(Math.abs(x) * 2 ** -11, 2 ** -25), `F16 ${x} → ${h[i]}`);
    ok(Math.abs(b[i] - x) <= Math.abs(x) * 2 ** -8, `BF16 ${x} → ${b[i]}`);
  }
});

/** Three shards at 80 bytes: {a, b}, {d} (400 bytes, over the limit, alone), {c, e}. */
function sample(): Record<string, F32Tensor> {
  const seq = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => (i - n / 2) * k);
  return {
    a: { shape: [4, 4], data: seq(16, 0.25) },
    b: { shape: [8], data: seq(8, 0.5), dtype: "F16" },
    d: { shape: [10, 10], data: seq(100, 1) },
    c: { shape: [2, 5], data: seq(10, 2), dtype: "BF16" },
    e: { shape: [8], data: seq(8, -1) },
  };
}

async function readDir(dir: string) {
  const text = await Deno.readTextFile(`${dir}/${INDEX_FILE}`);
  return readShardedSafetensors(text, (f) => Deno.readFile(`${dir}/${f}`), `${dir}/${INDEX_FILE}`);
}

Deno.test("a sharded checkpoint written atomically into a folder reads back; re-saves clean up", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "lisa-shards-" });
  try {
    const tensors = sample();
    const layout = encodeShardedSafetensors(tensors, 80);
    const names = [1, 2, 3].map((i) => `model-0000${i}-of-00003.safetensors`);
    deepEqual([...layout.files.keys()], names);
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    await Deno.mkdir(`${dir}/.safetensors.tmp-1-2`); // left by a killed write
    await writeSafetensorsLayout(dir, layout);
    const listing = async () => (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
    deepEqual(await listing(), ["config.json", INDEX_FILE, ...names].sort());
    const index = JSON.parse(await Deno.readTextFile(`${dir}/${INDEX_FILE}`));
    equal(index.metadata.total_size, 64 + 16 + 400 + 20 + 32);
    deepEqual(index.weight_map, { a: names[0], b: names[0], c: names[2], d: names[1], e: names[2] });
    const st = await readDir(dir);
    deepEqual(st.names().sort(), ["a", "b", "c", "d", "e"]);
    for (const [name, t] of Object.entries(tensors)) {
      deepEqual(st.getF32(name), t.data, name);
      deepEqual(st.entries.get(name)!.shape, t.shape);
      equal(st.entries.get(name)!.dtype, t.dtype ?? "F32");
    }
    throws(() => st.getF32("zz"), /model\.safetensors\.index\.json: no tensor named zz/);

    await writeSafetensorsLayout(dir, encodeShardedSafetensors(tensors, 1e9));
    deepEqual(await listing(), ["config.json", SINGLE_FILE]);
    deepEqual(new Safetensors(await Deno.readFile(`${dir}/${SINGLE_FILE}`)).getF32("d"), tensors.d.data);

    await writeSafetensorsLayout(dir, encodeShardedSafetensors(tensors, 500));
    const two = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    deepEqual(await listing(), ["config.json", INDEX_FILE, ...two].sort());
    deepEqual((await readDir(dir)).getF32("e"), tensors.e.data);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const WHERE = "/ckpt/model.safetensors.index.json";

/** An in-memory folder: file name → bytes. */
function folder(files: Record<string, Record<string, F32Tensor>>) {
  const bytes = new Map(Object.entries(files).map(([f, t]) => [f, encodeSafetensors(t)]));
  return (f: string) => {
    const b = bytes.get(f);
    return b ? Promise.resolve(b) : Promise.reject(new Error(`no file ${f}`));
  };
}

Deno.test("malformed indexes are rejected with one line naming the index and the key", async () => {
  const t = { shape: [2], data: Float32Array.from([1, 2]) };
  const read = folder({ "s1.safetensors": { a: t }, "s2.safetensors": { a: t, b: t } });
  const bad = async (index: unknown, re: RegExp) => {
    const text = typeof index === "string" ? index : JSON.stringify(index);
    const error = await readShardedSafetensors(text, read, WHERE).then(() => null, (e: Error) => e);
    ok(error, `loaded, expected ${re}`);
    equal(error.constructor, SafetensorsError, error.stack);
    equal(error.message.includes("\n"), false, error.message);
    ok(error.message.startsWith(`safetensors ${WHERE}: `), error.message);
    match(error.message, re);
  };
  await bad('{"weight_map": {"a": ', /not valid JSON \(/);
  await bad([1], /not a JSON object/);
  await bad({ metadata: { total_size: 8 } }, /weight_map is missing/);
  await bad({ weight_map: ["s1.safetensors"] }, /weight_map is not an object/);
  await bad({ weight_map: {} }, /weight_map lists no tensors/);
  await bad(
    { weight_map: { a: "../s1.safetensors" } },
    /weight_map\.a: "\.\.\/s1\.safetensors" is not a plain file/,
  );
  await bad(
    { weight_map: { a: "sub/s1.safetensors" } },
    /weight_map\.a: "sub\/s1\.safetensors" is not a plain/,
  );
  await bad({ weight_map: { a: 3 } }, /weight_map\.a: 3 is not a plain file name/);
  await bad({ weight_map: { a: "s3.safetensors" } }, /cannot read shard s3\.safetensors \(no file s3/);
  await bad(
    { weight_map: { a: "s2.safetensors", b: "s2.safetensors", c: "s2.safetensors" } },
    /weight_map\.c names shard s2\.safetensors, which holds no such tensor/,
  );
  await bad(
    { weight_map: { a: "s1.safetensors", b: "s2.safetensors" } },
    /tensor a is in two shards, s1\.safetensors and s2\.safetensors/,
  );
  await bad(
    { weight_map: { b: "s2.safetensors" } },
    /shard s2\.safetensors holds a, which weight_map does not/,
  );
  const fine = { a: "s2.safetensors", b: "s2.safetensors" };
  await bad(
    { metadata: { total_size: 999 }, weight_map: fine },
    /metadata\.total_size is 999 but .* 16 bytes/,
  );
  await bad(
    { metadata: { total_size: "16" }, weight_map: fine },
    /metadata\.total_size "16" is not a non-negative/,
  );
  await bad({ metadata: 5, weight_map: fine }, /metadata is not an object/);
  const st = await readShardedSafetensors(
    JSON.stringify({ metadata: { total_size: 16 }, weight_map: fine }),
    read,
  );
  deepEqual([...st.getF32("b")], [1, 2]);
});

Deno.test("fuzz: mutated index.json texts load or fail with one line naming the index", async () => {
  const layout = encodeShardedSafetensors(sample(), 80);
  const read = (f: string) => {
    const b = layout.files.get(f);
    return b ? Promise.resolve(b) : Promise.reject(new Error(`no file ${f}`));
  };
  const base = JSON.parse(layout.index!);
  const tally = new FuzzTally("index.json");
  for (let seed = 1; seed <= 400; seed++) {
    const d = new Draw(seed);
    const m = mutateJsonText(d, base);
    await tally.run(
      `seed ${seed} (${m.what})`,
      INDEX_FILE,
      () => readShardedSafetensors(m.value, read, `/ckpt/${INDEX_FILE}`),
      [SafetensorsError],
      (st) => {
        ok(st.names().length === 5, `${st.names().length} tensors`);
        for (const n of st.names()) {
          equal(
            st.getF32(n).length,
            st.entries.get(n)!.shape.reduce((p, x) => p * x, 1),
          );
        }
      },
    );
  }
  console.log(tally.summary());
  equal(tally.crashes.length, 0, tally.crashes.join("\n"));
  ok(tally.loaded > 0 && tally.rejected > 0, tally.summary());
});
