/**
 * Deterministic reductions (fixed summation order, no float atomics). A sum runs as passes: each
 * pass adds up parts of its input into partials and the last one writes the result. What is summed
 * (a tensor, its squares, row losses with their mask) and what the last pass writes (a sum, a norm,
 * a loss with its scale) are WGSL fragments, so one pass kernel per family serves every sum: this
 * file has the software family's (one invocation per partial, no barriers), reduce_gpu.ts the
 * workgroup one. Column sums (bias gradients) run as passes over chunks of rows.
 */
import {
  f32,
  floatInput,
  floatType,
  grid,
  type Kernel,
  type Source,
  vectorWidth,
  WGSL_GRID_PARAMS,
  WGSL_GROUP_INDEX,
} from "./kernel.ts";

/** The WGSL type of a sum: one number, or two sums side by side (row losses and their weights). */
export type SumType = "f32" | "vec2<f32>";

/** What a sum reads. */
export interface SumInput {
  /** Names the input and its sizes in kernel keys. */
  readonly key: string;
  /** Items summed. */
  readonly n: number;
  /** WGSL type an invocation accumulates items in (a vec4 keeps four independent sums). */
  readonly acc: string;
  /** WGSL type of the sum. */
  readonly type: SumType;
  /** Bindings the input takes, numbered from 0. */
  readonly bindings: number;
  /** WGSL declaring those bindings, `fn item(i: u32) -> acc` and `fn total(a: acc) -> type`. */
  readonly code: string;
}

/** What the last pass writes. */
export interface SumOutput {
  /** Names the output in kernel keys. */
  readonly key: string;
  /** WGSL declaring the output's bindings, numbered from `at`. */
  decl(at: number): string;
  /** WGSL statements storing `s`, the sum of part `g` (the whole sum in the last pass). */
  readonly body: string;
}

/** Σ x[i] (or x[i]²) over a tensor of `n` floats, read as vec4 units from `src` when n divides by 4. */
export function tensorSumInput(n: number, square: boolean, src: Source): SumInput {
  const w = vectorWidth(n);
  const t = floatType(w);
  return {
    key: `x${n}_sq${+square}_${src}`,
    n: n / w,
    acc: t,
    type: "f32",
    bindings: 1,
    code: `${floatInput("sum", "x", 0, w, src)}
fn item(i: u32) -> ${t} { let v = x(i); return ${square ? "v * v" : "v"}; }
fn total(a: ${t}) -> f32 { return ${w === 4 ? "a.x + a.y + a.z + a.w" : "a"}; }`,
  };
}

/** The `n` partial sums an earlier pass wrote. */
export function partialsInput(n: number, type: SumType): SumInput {
  return {
    key: `p${n}_${type === "f32" ? 1 : 2}`,
    n,
    acc: type,
    type,
    bindings: 1,
    code: `@group(0) @binding(0) var<storage, read> part_in: array<${type}>;
fn item(i: u32) -> ${type} { return part_in[i]; }
fn total(a: ${type}) -> ${type} { return a; }`,
  };
}

/** partial[g] = s: the output of every pass but the last. */
export function partialsOutput(type: SumType): SumOutput {
  return {
    key: `part${type === "f32" ? 1 : 2}`,
    decl: (at) => `@group(0) @binding(${at}) var<storage, read_write> part_out: array<${type}>;`,
    body: "part_out[g] = s;",
  };
}

/** out[slot] = f(scale · s) with f the identity or sqrt: a sum, a mean or an L2 norm. */
export function scalarOutput(scale: number, sqrt: boolean, slot: number): SumOutput {
  return {
    key: `c${scale}_sqrt${+sqrt}_at${slot}`,
    decl: (at) => `@group(0) @binding(${at}) var<storage, read_write> out: array<f32>;`,
    body: `out[${slot}u] = ${sqrt ? "sqrt" : ""}(s * ${f32(scale)});`,
  };
}

/**
 * One software pass: part g (of `parts`) sums the items i ≡ g (mod parts), one invocation each,
 * so neighbouring invocations read neighbouring items. Bindings: the input's, then the output's.
 */
export function sumPassKernel(input: SumInput, parts: number, output: SumOutput): Kernel {
  return {
    name: "sum_pass",
    key: `${input.key}_g${parts}_${output.key}`,
    loops: Math.ceil(input.n / parts),
    workgroups: grid(Math.ceil(parts / 64)),
    code: `${input.code}
${output.decl(input.bindings)}
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let g = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (g >= ${parts}u) { return; }
  var a = ${input.acc}(0.0);
  for (var i = g; i < ${input.n}u; i += ${parts}u) { a += item(i); }
  let s = total(a);
  ${output.body}
}`,
  };
}

/** Rows summed per partial by the first pass of column sums. */
export const COLUMN_CHUNK = 64;

/**
 * partial[c, j] = Σ x[r, j] over the rows r of span c, `span` rows each (rows × cols input; vec4
 * columns, read from `src`, when cols % 4 = 0). Run on its own partials until one row is left, it
 * also finishes the sum.
 */
export function columnPartialsKernel(
  rows: number,
  cols: number,
  src: Source = "storage",
  span = COLUMN_CHUNK,
): Kernel {
  const w = vectorWidth(cols);
  const t = floatType(w);
  const units = cols / w;
  const chunks = Math.ceil(rows / span);
  const input = floatInput("column_partials", "x", 0, w, src);
  return {
    name: "column_partials",
    key: `r${rows}_c${cols}_s${span}_${src}`,
    loops: Math.min(span, rows),
    workgroups: grid(Math.ceil((chunks * units) / 64)),
    code: `${input}
@group(0) @binding(1) var<storage, read_write> partial: array<${t}>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let u = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (u >= ${chunks * units}u) { return; }
  let c = u / ${units}u;
  let j = u % ${units}u;
  let end = min((c + 1u) * ${span}u, ${rows}u);
  var s = ${t}(0.0);
  for (var r = c * ${span}u; r < end; r++) { s += x(r * ${units}u + j); }
  partial[u] = s;
}`,
  };
}

/** dx[i] = g[0] · x[i] / norm[0]: the gradient of ‖x‖₂. */
export function l2NormBackwardKernel(n: number): Kernel {
  return {
    name: "l2norm_backward",
    key: `n${n}`,
    loops: 0,
    workgroups: grid(Math.ceil(n / 64)),
    code: `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> norm: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@compute @workgroup_size(64)
fn main(${WGSL_GRID_PARAMS}) {
  let i = ${WGSL_GROUP_INDEX} * 64u + lid;
  if (i >= ${n}u) { return; }
  dx[i] = g[0] * x[i] / norm[0];
}`,
  };
}
