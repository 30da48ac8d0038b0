/**
 * Workgroup reductions for the GPU family. With subgroups, each subgroup reduces in registers and
 * one barrier publishes the subgroup results (subgroup_id and num_subgroups make this independent of
 * how the device lays subgroups out); without them, a tree in workgroup memory (log2(threads)
 * barriers). Both return the result to every invocation, so callers may branch on it uniformly.
 */
import { grid, type Kernel, WGSL_GRID_PARAMS, WGSL_GROUP_INDEX } from "./kernel.ts";
import type { SumInput, SumOutput, SumType } from "./reduce.ts";

/** A workgroup reduction as WGSL, for a kernel of `threads` invocations. */
export interface WorkgroupReduce {
  /** Workgroup memory and the reduction function. */
  readonly code: string;
  /** Entry-point parameters it needs beyond WGSL_GRID_PARAMS (each starting with a comma). */
  readonly params: string;
  /** The WGSL call reducing value `v` of the calling invocation. */
  call(v: string): string;
  /** Loop iterations per invocation of one call. */
  readonly loops: number;
}

const SUBGROUP_PARAMS =
  ", @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_id) sg_id: u32, @builtin(num_subgroups) sg_count: u32";

function expectPowerOfTwo(threads: number): void {
  if (!(threads >= 1 && (threads & (threads - 1)) === 0)) {
    throw new Error(`workgroup reduction over ${threads} threads: needs a power of two`);
  }
}

/** Tree steps folding buf[lid + h] into buf[lid] with `combine`, halving h from threads/2 to 1. */
function tree(buf: string, threads: number, combine: (a: string, b: string) => string): string {
  const steps: string[] = [];
  for (let h = threads / 2; h >= 1; h /= 2) {
    steps.push(`  if (lid < ${h}u) { ${buf}[lid] = ${combine(`${buf}[lid]`, `${buf}[lid + ${h}u]`)}; }
  workgroupBarrier();`);
  }
  return steps.join("\n");
}

/** `wg_sum(v)`: Σ v over the workgroup's `threads` invocations (a power of two). */
export function workgroupSum(type: SumType, threads: number, subgroups: boolean): WorkgroupReduce {
  expectPowerOfTwo(threads);
  if (subgroups) {
    return {
      code: `var<workgroup> wg_sum_buf: array<${type}, ${threads}>;
fn wg_sum(v: ${type}, sg_lane: u32, sg_id: u32, sg_count: u32) -> ${type} {
  let s = subgroupAdd(v);
  if (sg_lane == 0u) { wg_sum_buf[sg_id] = s; }
  workgroupBarrier();
  var t = ${type}(0.0);
  for (var i = 0u; i < sg_count; i++) { t += wg_sum_buf[i]; }
  workgroupBarrier();
  return t;
}`,
      params: SUBGROUP_PARAMS,
      call: (v) => `wg_sum(${v}, sg_lane, sg_id, sg_count)`,
      // A subgroup has at least one invocation, so there are at most `threads` subgroups.
      loops: threads,
    };
  }
  return {
    code: `var<workgroup> wg_sum_buf: array<${type}, ${threads}>;
fn wg_sum(v: ${type}, lid: u32) -> ${type} {
  wg_sum_buf[lid] = v;
  workgroupBarrier();
${tree("wg_sum_buf", threads, (a, b) => `${a} + ${b}`)}
  let t = wg_sum_buf[0];
  workgroupBarrier();
  return t;
}`,
    params: "",
    call: (v) => `wg_sum(${v}, lid)`,
    loops: 0,
  };
}

/**
 * `wg_max_sum(p)`: combines each invocation's online-softmax state p = (max m, Σ exp(x − m)) into
 * the workgroup's (M, Σ exp(x − M)).
 */
export function workgroupMaxSum(threads: number, subgroups: boolean): WorkgroupReduce {
  expectPowerOfTwo(threads);
  if (subgroups) {
    return {
      code: `var<workgroup> wg_ms_buf: array<vec2<f32>, ${threads}>;
fn wg_max_sum(p: vec2<f32>, sg_lane: u32, sg_id: u32, sg_count: u32) -> vec2<f32> {
  let m = subgroupMax(p.x);
  let s = subgroupAdd(p.y * exp(p.x - m));
  if (sg_lane == 0u) { wg_ms_buf[sg_id] = vec2<f32>(m, s); }
  workgroupBarrier();
  var mx = -3.0e38;
  for (var i = 0u; i < sg_count; i++) { mx = max(mx, wg_ms_buf[i].x); }
  var t = 0.0;
  for (var i = 0u; i < sg_count; i++) { let q = wg_ms_buf[i]; t += q.y * exp(q.x - mx); }
  workgroupBarrier();
  return vec2<f32>(mx, t);
}`,
      params: SUBGROUP_PARAMS,
      call: (v) => `wg_max_sum(${v}, sg_lane, sg_id, sg_count)`,
      loops: 2 * threads,
    };
  }
  return {
    code: `var<workgroup> wg_ms_buf: array<vec2<f32>, ${threads}>;
fn ms_combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let m = max(a.x, b.x);
  return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}
fn wg_max_sum(p: vec2<f32>, lid: u32) -> vec2<f32> {
  wg_ms_buf[lid] = p;
  workgroupBarrier();
${tree("wg_ms_buf", threads, (a, b) => `ms_combine(${a}, ${b})`)}
  let t = wg_ms_buf[0];
  workgroupBarrier();
  return t;
}`,
    params: "",
    call: (v) => `wg_max_sum(${v}, lid)`,
    loops: 0,
  };
}

/**
 * One GPU pass: workgroup g sums items [g·threads·perThread, (g+1)·threads·perThread), invocation
 * lid taking every threads-th of them from lid (coalesced loads), then reduces across the
 * workgroup. Bindings: the input's, then the output's.
 */
export function sumBlocksKernel(
  input: SumInput,
  threads: number,
  perThread: number,
  subgroups: boolean,
  output: SumOutput,
): Kernel {
  const block = threads * perThread;
  const parts = Math.ceil(input.n / block);
  const red = workgroupSum(input.type, threads, subgroups);
  return {
    name: "sum_blocks",
    key: `${input.key}_t${threads}x${perThread}_sg${+subgroups}_${output.key}`,
    loops: perThread + red.loops,
    workgroups: grid(parts),
    code: `${input.code}
${output.decl(input.bindings)}
${red.code}
@compute @workgroup_size(${threads})
fn main(${WGSL_GRID_PARAMS}${red.params}) {
  let g = ${WGSL_GROUP_INDEX};
  if (g >= ${parts}u) { return; }
  var a = ${input.acc}(0.0);
  for (var k = 0u; k < ${perThread}u; k++) {
    let i = g * ${block}u + k * ${threads}u + lid;
    if (i < ${input.n}u) { a += item(i); }
  }
  let s = ${red.call("total(a)")};
  if (lid == 0u) { ${output.body} }
}`,
  };
}
