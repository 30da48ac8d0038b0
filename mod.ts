/**
 * lisa-webgpu: fine-tune GPT-style models on WebGPU and measure what LISA, LoRA and full
 * fine-tuning cost in memory and buy in loss. This module is the public API.
 *
 * @example
 * ```ts
 * import { backward, fromArray, matmul, requestGpu, sum } from "./mod.ts";
 * const gpu = await requestGpu();
 * const w = fromArray(gpu, [1, 2, 3, 4], [2, 2], { requiresGrad: true, category: "weights" });
 * const x = fromArray(gpu, [1, 1], [1, 2]);
 * backward(sum(matmul(x, w)));
 * console.log(await w.grad!.download(), gpu.memory.stats());
 * ```
 * @module
 */
export {
  type AdapterReport,
  type Backend,
  type Binding,
  Gpu,
  type GpuDeviceOptions,
  GpuLostError,
  type GpuOptions,
  GpuStepError,
  isGpuFault,
  NoAdapterError,
  parseDebugFlag,
  parseMemoryLimit,
  requestGpu,
} from "./core/gpu.ts";
export {
  type Allocation,
  type AllocationInfo,
  type BufferKind,
  CATEGORIES,
  type Category,
  type CategoryBytes,
  formatBytes,
  GpuMemoryError,
  Memory,
  type MemoryEvent,
  type MemoryLimitKind,
  type MemoryOptions,
  type MemoryStats,
  sizeClass,
  type TextureAllocation,
} from "./core/memory.ts";
export {
  currentCategory,
  type DType,
  empty,
  fromArray,
  full,
  keep,
  type Kept,
  type Node,
  shapeSize,
  Tensor,
  type TensorOptions,
  tidy,
  withCategory,
  zeros,
} from "./core/tensor.ts";
export {
  backward,
  clearTape,
  evalMode,
  isGradEnabled,
  isTraining,
  needsGrad,
  noGrad,
  record,
  savedActivationBytes,
} from "./core/autograd.ts";
export { add, mul, scale } from "./core/ops/elementwise.ts";
export {
  matmul,
  type MatmulOptions,
  matmulShape,
  type MatmulVariant,
  runMatmul,
  runTiled,
} from "./core/ops/matmul.ts";
export { gelu } from "./core/ops/gelu.ts";
export { layerNorm } from "./core/ops/layernorm.ts";
export { rmsNorm } from "./core/ops/rmsnorm.ts";
export { checkRopeScaling, rope, ROPE_THETA } from "./core/ops/rope.ts";
export { swiglu } from "./core/ops/swiglu.ts";
export { concatLast } from "./core/ops/concat.ts";
export { crossEntropy } from "./core/ops/cross_entropy.ts";
export { embedding, groupByToken } from "./core/ops/embedding.ts";
export { globalNorm, l2Norm, mean, sum, sumColumns } from "./core/ops/reduce.ts";
export { checkLoops, type Kernel, KernelLimitError, MAX_LOOP_ITERATIONS } from "./kernels/kernel.ts";
export { KernelCompileError, type Pipeline, PipelineCache } from "./kernels/cache.ts";
export { type MatmulPlan, type MatmulShape, type MatmulTile, planFor } from "./kernels/matmul.ts";
export {
  KERNEL_FAMILY_SETTINGS,
  type KernelFamily,
  type KernelFamilySetting,
  type MatmulLimits,
  matmulPlan,
  parseKernelFamily,
  resolveKernelFamily,
} from "./kernels/select.ts";
export { type KernelTime } from "./core/gpu.ts";
export {
  attention,
  type AttentionOptions,
  attentionShape,
  type AttentionVariant,
  causalSoftmax,
} from "./core/ops/attention.ts";
export { type AttentionShape, type AttentionSource } from "./kernels/attention.ts";
export { lmHeadChunkRows, lmHeadLoss, type LmHeadOptions } from "./core/ops/lm_head.ts";
export { Rng, type RngState } from "./core/random.ts";
export {
  Embedding,
  emptyParams,
  type Fill,
  initParams,
  LayerNorm,
  Linear,
  type LinearLike,
  type LinearOptions,
  type Module,
  normalArray,
  type ParamFactory,
  RMSNorm,
  type WeightLayout,
} from "./core/nn/layers.ts";
export {
  CausalLM,
  checkIds,
  checkTargets,
  type LanguageModel,
  type LinearSlot,
  type ModelFamily,
  type ModelSizes,
  prefix,
  residual,
} from "./core/nn/model.ts";
export { createModel, type ModelSpec, positionsKey } from "./core/nn/families.ts";
export { Llama, LlamaAttention, LlamaDecoderLayer, LlamaMLP, validateLlamaConfig } from "./core/nn/llama.ts";
export {
  Attention,
  Block,
  GPT,
  type GPTConfig,
  MLP,
  type ModelInput,
  validateConfig,
} from "./core/nn/gpt.ts";
export { AdamW, type AdamWOptions, type ParamState, type StepResult } from "./core/optim/adamw.ts";
export { makeSchedule, type Schedule, type ScheduleOptions } from "./core/optim/schedule.ts";
export {
  type DirEntry,
  type FileHost,
  getHost,
  isNotFound,
  memoryHost,
  type MemoryHostOptions,
  NotFoundError,
  setHost,
} from "./core/host.ts";
export {
  encodeSafetensors,
  f16ToF32,
  type F32Tensor,
  f32ToBF16,
  f32ToF16,
  readSafetensorsFile,
  type SafeDType,
  type SafeEntry,
  Safetensors,
  SafetensorsError,
  tensorBytes,
  type WriteDType,
  writeFileAtomic,
} from "./core/io/safetensors.ts";
export {
  encodeShardedSafetensors,
  INDEX_FILE,
  readShardedSafetensors,
  type SafetensorsLayout,
  ShardedSafetensors,
  type ShardEntry,
  SINGLE_FILE,
} from "./core/io/shards.ts";
export {
  CheckpointError,
  type CheckpointTensors,
  checkWeightEntry,
  configFromHF,
  configToHF,
  downloadParameters,
  finite,
  type KeyStyle,
  loadGPT2,
  readCheckpointTensors,
  readConfigJson,
  readTokenizer,
  refuseUnexpected,
  saveGPT2,
  uploadWeights,
  writeSafetensorsLayout,
} from "./core/io/hf.ts";
export {
  DEFAULT_SHARD_BYTES,
  llamaLayout,
  type LlamaSource,
  loadLlama,
  saveLlama,
  type SaveLlamaOptions,
} from "./core/io/llama.ts";
export {
  type LoadedModel,
  loadModel,
  type ModelSource,
  saveModel,
  type SaveModelOptions,
} from "./core/io/models.ts";
export {
  type CheckpointParts,
  type CheckpointPhase,
  findCheckpoint,
  loadTrainerState,
  saveCheckpoint,
  type TrainerState,
} from "./core/io/checkpoint.ts";
export {
  makeMethod,
  METHOD_SEED_OFFSET,
  type MethodName,
  METHODS,
  type MethodSettings,
} from "./core/finetune/methods.ts";
export {
  bytesTokenizer,
  encodeDocuments,
  gpt2Tokenizer,
  type Tokenizer,
  tokenizerFor,
} from "./core/data/tokenizer.ts";
export { EOS_TOKENS, tokenizerFromJson, TokenizerJsonError } from "./core/data/hf_tokenizer.ts";
export {
  type LlamaConfig,
  llamaConfigFromHF,
  llamaConfigToHF,
  MODEL_TYPES,
  type ModelType,
  modelTypeOf,
} from "./core/nn/llama_config.ts";
export { brownToText, loadBrown, loadBrownTokens } from "./core/data/corpora.ts";
export {
  type Dataset,
  encodeExample,
  type Example,
  loadDataset,
  needsTokenizer,
  parseDataset,
} from "./core/data/formats.ts";
export * from "./core/data/batches.ts";
export { type EvalResult, evaluate } from "./core/evaluate.ts";
export {
  type CompletionScore,
  type ExpectedCompletion,
  greedyComplete,
  type GreedyOptions,
  scoreCompletions,
} from "./core/generate.ts";
export { type FinetuneMethod, StaticMethod } from "./core/finetune/method.ts";
export { FullMethod } from "./core/finetune/full.ts";
export {
  DEFAULT_READ_EVERY,
  type EvalRecord,
  msPerStep,
  type StepRecord,
  train,
  TrainingDivergedError,
  type TrainResult,
  type TrainSetup,
} from "./core/finetune/trainer.ts";
export { dropout } from "./core/ops/dropout.ts";
export { type LoraConfig, LoRALinear } from "./core/nn/lora.ts";
export {
  LisaMethod,
  type LisaOptions,
  type LisaState,
  type StatePolicy,
  weightedSample,
} from "./core/finetune/lisa.ts";
export { LoraMethod, type LoraOptions } from "./core/finetune/lora.ts";
