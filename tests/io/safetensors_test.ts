import { deepEqual, equal, throws } from "node:assert/strict";
import { encodeSafetensors, f16ToF32, Safetensors } from "../../core/io/safetensors.ts";

/** A file from a header object and a data section, as a writer that may be broken would make it. */
function raw(header: unknown, data: Uint8Array, headerLength?: number): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength ?? h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

Deno.test("safetensors round-trips F32 tensors and metadata, data 8-byte aligned", () => {
  const bytes = encodeSafetensors({
    a: { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
    b: { shape: [1], data: Float32Array.from([-0.5]) },
  }, { format: "pt" });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  equal((8 + n) % 8, 0);
  const st = new Safetensors(bytes);
  deepEqual(st.names(), ["a", "b"]);
  deepEqual(st.entries.get("a")!.shape, [2, 3]);
  deepEqual([...st.getF32("a")], [1, 2, 3, 4, 5, 6]);
  deepEqual([...st.getF32("b")], [-0.5]);
  deepEqual(st.metadata, { format: "pt" });
});

Deno.test("safetensors reads F16 and BF16 as f32", () => {
  const f16 = new Uint8Array(new Uint16Array([0x3c00, 0xc000, 0x3555, 0x0001]).buffer); // 1, -2, ~0.3333, 2^-24
  const bf16 = new Uint8Array(new Uint16Array([0x3f80, 0xc0a0]).buffer); // 1, -5
  const data = new Uint8Array([...f16, ...bf16]);
  const st = new Safetensors(raw({
    h: { dtype: "F16", shape: [4], data_offsets: [0, 8] },
    b: { dtype: "BF16", shape: [2], data_offsets: [8, 12] },
  }, data));
  const h = st.getF32("h");
  deepEqual([h[0], h[1], h[3]], [1, -2, 2 ** -24]);
  equal(Math.abs(h[2] - 0.33325) < 1e-4, true);
  deepEqual([...st.getF32("b")], [1, -5]);
  equal(f16ToF32(0x7c00), Infinity);
  equal(Number.isNaN(f16ToF32(0x7e00)), true);
});

Deno.test("malformed safetensors files are rejected naming the problem", () => {
  const four = new Uint8Array(16);
  throws(
    () => new Safetensors(new Uint8Array(4), "f"),
    /safetensors f: file is 4 bytes, shorter than the 8-byte header length/,
  );
  throws(
    () => new Safetensors(raw({}, four, 1e6), "f"),
    /header length 1000000 runs past the end of the file/,
  );
  throws(
    () => new Safetensors(raw("x", four).map((b, i) => (i === 8 ? 0x7b : b)), "f"),
    /header is not valid JSON/,
  );
  throws(() => new Safetensors(raw([1], four), "f"), /header is not a JSON object/);
  throws(
    () => new Safetensors(raw({ a: { dtype: "Q8", shape: [1], data_offsets: [0, 4] } }, four), "f"),
    /tensor a: unknown dtype "Q8"/,
  );
  throws(
    () => new Safetensors(raw({ a: { dtype: "F32", shape: [2], data_offsets: [0, 4] } }, four), "f"),
    /tensor a: shape \[2\] of F32 needs 8 bytes but data_offsets \[0, 4\] hold 4/,
  );
  throws(
    () => new Safetensors(raw({ a: { dtype: "F32", shape: [8], data_offsets: [0, 32] } }, four), "f"),
    /tensor a: data_offsets \[0, 32\] run past the data section \(16 bytes\)/,
  );
  throws(
    () =>
      new Safetensors(
        raw({
          a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
          b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
        }, four),
        "f",
      ),
    /tensors a \[0,8\] and b \[4,12\] overlap/,
  );
  throws(
    () => new Safetensors(raw({ a: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, four), "f"),
    /shape \[-1\] is not a list of non-negative integers/,
  );
  throws(
    () => new Safetensors(raw({ a: { dtype: "F32", shape: [1], data_offsets: [8, 4] } }, four), "f"),
    /data_offsets \[8, 4\] end before they begin/,
  );
  throws(() => new Safetensors(raw({}, four), "f").getF32("zz"), /no tensor named zz/);
  const ints = new Safetensors(raw({ i: { dtype: "I64", shape: [2], data_offsets: [0, 16] } }, four), "f");
  throws(() => ints.getF32("i"), /dtype I64 cannot be read as f32/);
});
