/**
 * A kernel is WGSL source made for one set of sizes, with a name and a key that identify it in the
 * pipeline cache and in error messages. Sizes are baked in as constants: training shapes repeat, and
 * constant loop bounds let both GPU compilers and llvmpipe unroll and drop index arithmetic.
 */

/** WGSL for one kernel at fixed sizes. */
export interface Kernel {
  /** Kernel family, e.g. `matmul`. */
  readonly name: string;
  /** The sizes and variant it was made for, e.g. `M64_N32_K16`; names the kernel in errors. */
  readonly key: string;
  /** WGSL source with one `@compute` entry point named `main`. */
  readonly code: string;
  /** Workgroups to dispatch, when the kernel knows (elementwise kernels do). */
  readonly workgroups?: readonly [number, number?, number?];
  /**
   * The most loop iterations one invocation runs, all loops together, nested ones counted (loops
   * unrolled in the generated source count nothing). Dispatch refuses more than
   * {@link MAX_LOOP_ITERATIONS}.
   */
  readonly loops: number;
}

/**
 * llvmpipe ends an invocation's loops after 65,535 iterations in total and returns wrong numbers
 * without a word, so no kernel may need more: long dimensions are split across invocations.
 */
export const MAX_LOOP_ITERATIONS = 65535;

/** Raised when a kernel would run more loop iterations per invocation than every adapter allows. */
export class KernelLimitError extends Error {}

/** Throws {@link KernelLimitError} naming `kernel` when it needs more than MAX_LOOP_ITERATIONS. */
export function checkLoops(kernel: Kernel): void {
  if (!(kernel.loops <= MAX_LOOP_ITERATIONS)) {
    throw new KernelLimitError(
      `kernel ${kernel.name} [${kernel.key}] would run ${kernel.loops} loop iterations per invocation; ` +
        `software adapters stop at ${MAX_LOOP_ITERATIONS} and return wrong numbers, so the op must split the work`,
    );
  }
}

/** Elements per invocation: 4 (vec4 loads, ~2.6× faster per element on llvmpipe) when every size divides by 4. */
export function vectorWidth(...sizes: number[]): 1 | 4 {
  return sizes.every((s) => s % 4 === 0) ? 4 : 1;
}

/** The WGSL type of `w` floats. */
export function floatType(w: 1 | 4): string {
  return w === 4 ? "vec4<f32>" : "f32";
}

/** The most workgroups a dispatch may have along one dimension (WebGPU's default limit). */
export const MAX_WORKGROUPS_PER_DIM = 65535;

/**
 * Workgroup counts [x, y] covering `groups` workgroups without passing the per-dimension limit;
 * kernels recover the linear workgroup index with {@link WGSL_GROUP_INDEX}.
 */
export function grid(groups: number): [number, number] {
  if (groups <= MAX_WORKGROUPS_PER_DIM) return [Math.max(1, groups), 1];
  const y = Math.ceil(groups / MAX_WORKGROUPS_PER_DIM);
  return [Math.ceil(groups / y), y];
}

/** WGSL expression for the linear workgroup index under a {@link grid} dispatch. */
export const WGSL_GROUP_INDEX = "(wid.y * nwg.x + wid.x)";

/** WGSL builtin parameters that {@link WGSL_GROUP_INDEX} needs. */
export const WGSL_GRID_PARAMS =
  "@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32";

/** Formats a number as a WGSL f32 literal (always with a decimal point or exponent). */
export function f32(x: number): string {
  if (!Number.isFinite(x)) throw new Error(`kernel constant ${x} is not finite`);
  const s = String(Math.fround(x));
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/** Where a kernel reads a flat f32 input from, in vec4 units: the buffer, or a texture copy of it. */
export type Source = "storage" | "texture";

/** Texels per row of a flat texture (vec4 unit i sits at (i mod FLAT_WIDTH, i div FLAT_WIDTH)). */
export const FLAT_WIDTH = 1024;

/**
 * WGSL declaring input `name` at `binding` and a function `name(i) -> vec4<f32>` reading its vec4
 * unit i. On llvmpipe a read through a texture costs about half a storage-buffer read, copy included.
 */
export function vec4Input(name: string, binding: number, src: Source): string {
  return src === "texture"
    ? `@group(0) @binding(${binding}) var ${name}_t: texture_storage_2d<rgba32float, read>;
fn ${name}(i: u32) -> vec4<f32> { return textureLoad(${name}_t, vec2<u32>(i % ${FLAT_WIDTH}u, i / ${FLAT_WIDTH}u)); }`
    : `@group(0) @binding(${binding}) var<storage, read> ${name}_b: array<vec4<f32>>;
fn ${name}(i: u32) -> vec4<f32> { return ${name}_b[i]; }`;
}

/**
 * WGSL for input `name` at `binding` read as `name(i)`: vec4 units from `src` when `w` is 4, else
 * a plain f32 array (which only a buffer can be). `kernel` names the caller in the error.
 */
export function floatInput(kernel: string, name: string, binding: number, w: 1 | 4, src: Source): string {
  if (w === 4) return vec4Input(name, binding, src);
  if (src !== "storage") throw new Error(`${kernel}: texture input ${name} needs a size divisible by 4`);
  return `@group(0) @binding(${binding}) var<storage, read> ${name}_b: array<f32>;
fn ${name}(i: u32) -> f32 { return ${name}_b[i]; }`;
}
