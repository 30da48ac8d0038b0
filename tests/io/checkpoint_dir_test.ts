/** readCheckpointTensors: a model folder's weights from one file or from shards, with errors naming files. */
import { deepEqual, equal, rejects } from "node:assert/strict";
import { readCheckpointTensors, writeSafetensorsLayout } from "../../core/io/hf.ts";
import { encodeShardedSafetensors, INDEX_FILE } from "../../core/io/shards.ts";
import type { F32Tensor } from "../../core/io/safetensors.ts";

const tensors: Record<string, F32Tensor> = {
  "model.embed_tokens.weight": { shape: [5, 4], data: Float32Array.from({ length: 20 }, (_, i) => i / 7) },
  "model.norm.weight": { shape: [4], data: Float32Array.from([1, 2, 3, 4]), dtype: "BF16" },
  "lm_head.weight": { shape: [5, 4], data: Float32Array.from({ length: 20 }, (_, i) => -i), dtype: "F16" },
};

Deno.test("a model folder's weights load from model.safetensors or from its shards, the same values", async () => {
  for (const [limit, sharded] of [[1 << 20, false], [40, true]] as const) {
    const dir = await Deno.makeTempDir({ prefix: "ckpt-dir-" });
    try {
      await writeSafetensorsLayout(dir, encodeShardedSafetensors(tensors, limit));
      const got = await readCheckpointTensors(dir);
      equal(got.sharded, sharded);
      deepEqual(got.tensors.names().sort(), Object.keys(tensors).sort());
      for (const [name, t] of Object.entries(tensors)) {
        deepEqual([...got.tensors.getF32(name)], [...t.data], name); // all exact in their dtypes
        equal(got.tensors.entries.get(name)!.dtype, t.dtype ?? "F32");
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("a folder with no weights, or an index naming a missing shard, is an error naming the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckpt-dir-" });
  try {
    await rejects(readCheckpointTensors(dir), /neither model.safetensors.index.json nor model.safetensors/);
    await writeSafetensorsLayout(dir, encodeShardedSafetensors(tensors, 40));
    const index = JSON.parse(await Deno.readTextFile(`${dir}/${INDEX_FILE}`));
    const shard = index.weight_map["lm_head.weight"];
    await Deno.remove(`${dir}/${shard}`);
    await rejects(readCheckpointTensors(dir), new RegExp(`${shard}`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
