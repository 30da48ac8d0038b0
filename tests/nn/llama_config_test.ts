/** LLaMA-family config.json: the paper's models parse to the right sizes; unsupported ones fail naming the key. */
import { deepEqual, equal, throws } from "node:assert/strict";
import { llamaConfigFromHF, llamaConfigToHF, modelTypeOf } from "../../core/nn/llama_config.ts";

// Fields as in the models' published config.json files.
const TINYLLAMA = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  vocab_size: 32000,
  hidden_size: 2048,
  intermediate_size: 5632,
  num_hidden_layers: 22,
  num_attention_heads: 32,
  num_key_value_heads: 4,
  max_position_embeddings: 2048,
  rms_norm_eps: 1e-5,
  hidden_act: "silu",
  rope_scaling: null,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
};
const LLAMA2_7B = {
  model_type: "llama",
  vocab_size: 32000,
  hidden_size: 4096,
  intermediate_size: 11008,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 32,
  max_position_embeddings: 4096,
  rms_norm_eps: 1e-5,
  hidden_act: "silu",
  rope_theta: 10000.0,
  attention_bias: false,
  tie_word_embeddings: false,
};
const MISTRAL_7B = {
  model_type: "mistral",
  vocab_size: 32000,
  hidden_size: 4096,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  max_position_embeddings: 32768,
  sliding_window: 4096,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  hidden_act: "silu",
  tie_word_embeddings: false,
};

Deno.test("TinyLlama, LLaMA-2-7B and Mistral-7B configs parse to their sizes", () => {
  deepEqual(llamaConfigFromHF(TINYLLAMA), {
    vocabSize: 32000,
    blockSize: 2048,
    nLayer: 22,
    nHead: 32,
    nKvHead: 4,
    nEmbd: 2048,
    nInner: 5632,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    tiedHead: false,
  });
  equal(llamaConfigFromHF(LLAMA2_7B).nKvHead, 32, "no grouped-query attention in LLaMA-2-7B");
  const m = llamaConfigFromHF(MISTRAL_7B);
  equal(m.nKvHead, 8);
  equal(m.blockSize, 4096, "the sliding window caps the longest sequence: within it attention is causal");
  equal(llamaConfigFromHF({ ...MISTRAL_7B, sliding_window: null }).blockSize, 32768);
  const defaults = llamaConfigFromHF({
    ...TINYLLAMA,
    num_key_value_heads: undefined,
    rms_norm_eps: undefined,
  });
  equal(defaults.nKvHead, 32, "num_key_value_heads defaults to the heads");
  equal(defaults.rmsNormEps, 1e-6, "transformers' LlamaConfig default");
  const c = llamaConfigFromHF(TINYLLAMA);
  deepEqual(llamaConfigFromHF(llamaConfigToHF(c)), c, "config.json round trip");
});

Deno.test("model_type dispatch: absent is gpt2, unknown names the supported types", () => {
  equal(modelTypeOf({ n_layer: 2 }), "gpt2");
  equal(modelTypeOf(MISTRAL_7B), "mistral");
  throws(
    () => modelTypeOf({ model_type: "bert" }, "d/config.json"),
    /d\/config.json: model_type "bert" is not supported; supported: gpt2, llama, mistral/,
  );
  throws(() => modelTypeOf([1]), /not a JSON object/);
  throws(() => llamaConfigFromHF({ model_type: "gpt2" }), /not a LLaMA-family model/);
});

Deno.test("unsupported LLaMA configs fail at load naming the key", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { rope_scaling: { type: "linear", factor: 2 } },
      /rope_scaling \{"type":"linear","factor":2\} is not implemented/,
    ],
    [{ hidden_act: "gelu" }, /hidden_act "gelu" is not silu/],
    [{ attention_bias: true }, /attention_bias true: biases are not supported/],
    [{ mlp_bias: true }, /mlp_bias true/],
    [{ num_key_value_heads: 5 }, /num_attention_heads 32 is not divisible by num_key_value_heads 5/],
    [{ hidden_size: 2050 }, /hidden_size 2050 is not divisible by num_attention_heads 32/],
    [{ hidden_size: 32 * 3 }, /head size 3 is odd/],
    [{ head_dim: 128 }, /head_dim 128 is not hidden_size \/ num_attention_heads \(64\)/],
    [{ vocab_size: 0 }, /vocab_size is 0, expected a positive integer/],
    [{ intermediate_size: "big" }, /intermediate_size is "big"/],
    [{ rms_norm_eps: -1 }, /rms_norm_eps -1 is not a positive number/],
    [{ tie_word_embeddings: "yes" }, /tie_word_embeddings "yes" is not true or false/],
  ];
  for (const [patch, error] of cases) throws(() => llamaConfigFromHF({ ...TINYLLAMA, ...patch }), error);
  throws(() => llamaConfigFromHF({ ...MISTRAL_7B, sliding_window: -4 }), /sliding_window is -4/);
});
