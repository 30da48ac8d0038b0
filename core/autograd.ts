/**
 * The tape. Ops call {@link record} after encoding their forward kernels; `backward()` walks the
 * nodes reachable from the loss in reverse order, accumulates leaf gradients into `.grad` (category
 * `grads`), and frees each node's saved tensors as soon as it has run. Ops decide what to save: an
 * input is saved only when some gradient needs it, so a frozen weight's matmul keeps no input. The
 * training/evaluation mode lives here too, beside grad mode, since both are scoped switches ops read.
 */
import { vectorWidth } from "../kernels/kernel.ts";
import { accumulateKernel } from "../kernels/elementwise.ts";
import { vec4Input } from "./ops/pack.ts";
import { full, type Node, type Tensor, withCategory, zeros } from "./tensor.ts";

let gradEnabled = true;
let training = true;
let tape: Node[] = [];

/** True unless inside {@link noGrad}. */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording anything on the tape (evaluation, optimizer updates). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** True unless inside {@link evalMode}: dropout draws masks only in training mode. */
export function isTraining(): boolean {
  return training;
}

/**
 * Runs `fn` in evaluation mode (PyTorch's `model.eval()`, scoped like {@link noGrad}): dropout is the
 * identity and draws nothing from its generator, so evaluation and decoding neither see random masks
 * nor move the training run's random stream. Gradients are unaffected; combine with `noGrad`.
 */
export function evalMode<T>(fn: () => T): T {
  const prev = training;
  training = false;
  try {
    return fn();
  } finally {
    training = prev;
  }
}

/** True when `t`'s gradient will be needed: grad mode is on and `t` requires grad. */
export function needsGrad(t: Tensor | null | undefined): boolean {
  return gradEnabled && !!t?.requiresGrad;
}

/**
 * Makes `output` differentiable through `backward` when any input needs a gradient; `saved` are
 * the tensors backward reads (each gets a reference). Returns `output`.
 */
export function record(
  op: string,
  output: Tensor,
  inputs: readonly Tensor[],
  saved: readonly (Tensor | null | undefined | false)[],
  backward: (grad: Tensor) => readonly (Tensor | null)[],
): Tensor {
  if (!inputs.some(needsGrad)) return output;
  const keep = saved.filter((t): t is Tensor => !!t);
  for (const t of keep) t.retain();
  const node: Node = { op, inputs, saved: keep, backward, freed: false };
  output.requiresGrad = true;
  output.node = node;
  tape.push(node);
  return output;
}

/** Bytes of saved tensors on the tape that are not weights (what the graph keeps for backward). */
export function savedActivationBytes(): number {
  const seen = new Set<Tensor>();
  for (const n of tape) for (const t of n.saved) if (t.category !== "weights") seen.add(t);
  let bytes = 0;
  for (const t of seen) bytes += t.bytes;
  return bytes;
}

/** Frees every saved tensor on the tape and forgets the graph (no backward will run). */
export function clearTape(): void {
  const nodes = tape;
  tape = [];
  for (const n of nodes) freeNode(n);
}

function order(root: Tensor): Tensor[] {
  const out: Tensor[] = [];
  const seen = new Set<Tensor>();
  const stack: [Tensor, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const inputs = t.node?.inputs ?? [];
    if (i < inputs.length) {
      top[1]++;
      const u = inputs[i];
      if (u.requiresGrad && u.node && !u.node.freed && !seen.has(u)) {
        seen.add(u);
        stack.push([u, 0]);
      }
    } else {
      out.push(t);
      stack.pop();
    }
  }
  return out.reverse();
}

/** `into + g`, in place when nothing but the caller holds `into`; else a new tensor (caller owns). */
function add(into: Tensor, g: Tensor): Tensor {
  const addInto = (src: Tensor, dst: Tensor) => {
    const s = vec4Input(src, "accumulate", vectorWidth(dst.size));
    dst.gpu.dispatch(accumulateKernel(dst.size, s.src), [s.binding, dst.binding("accumulate")]);
    s.done();
  };
  if (into.refs === 1) {
    addInto(g, into);
    return into;
  }
  const sum = zeros(into.gpu, into.shape, { category: into.category, name: into.name }).own();
  addInto(into, sum);
  addInto(g, sum);
  return sum;
}

/** Adds `gi` to the gradient slot of `input`: the map for inner tensors, `.grad` for leaves. */
function accumulate(input: Tensor, gi: Tensor, grads: Map<Tensor, Tensor>): void {
  const prev = input.node ? grads.get(input) : input.grad;
  let next: Tensor;
  if (!prev) {
    gi.retain();
    next = gi;
  } else {
    next = add(prev, gi);
    if (next !== prev) prev.release();
  }
  if (input.node) {
    grads.set(input, next);
  } else {
    next.retag("grads");
    input.grad = next;
  }
}

function freeNode(node: Node): void {
  if (node.freed) return;
  node.freed = true;
  for (const t of node.saved) t.release();
  node.saved = [];
}

/**
 * Backpropagates from `loss` (one element, or pass its gradient as `grad`): every leaf on the way
 * that requires grad gets its gradient added to `.grad`. The graph is consumed: the whole tape is
 * freed afterwards, so run backward once per forward (sum losses to combine them).
 */
export function backward(loss: Tensor, grad?: Tensor): void {
  if (!loss.requiresGrad) {
    throw new Error(`backward: ${loss} does not require grad (no parameter in its graph requires grad)`);
  }
  if (!loss.node || loss.node.freed) {
    throw new Error(`backward: ${loss} has no graph: it is a leaf or an earlier backward() freed its graph`);
  }
  if (!grad && loss.size !== 1) {
    throw new Error(
      `backward: ${loss} has ${loss.size} elements; pass its gradient or reduce it to a scalar`,
    );
  }
  if (grad && grad.size !== loss.size) {
    throw new Error(`backward: gradient [${grad.shape}] does not match ${loss} [${loss.shape}]`);
  }
  try {
    withCategory("workspace", () => {
      const grads = new Map<Tensor, Tensor>();
      if (grad) {
        grad.retain();
        grads.set(loss, grad);
      } else {
        grads.set(loss, full(loss.gpu, loss.shape, 1, { name: `d${loss.name}` }).own());
      }
      for (const t of order(loss)) {
        const node = t.node!;
        const g = grads.get(t);
        grads.delete(t);
        t.node = null;
        if (g) {
          const inputGrads = node.backward(g);
          const fresh = new Set<Tensor>();
          for (const gi of inputGrads) if (gi && gi !== g && !gi.disposed) fresh.add(gi.own());
          node.inputs.forEach((input, i) => {
            const gi = inputGrads[i];
            if (gi && input.requiresGrad) accumulate(input, gi, grads);
          });
          for (const gi of fresh) gi.release();
          g.release();
        }
        freeNode(node);
      }
      for (const g of grads.values()) g.release();
    });
  } finally {
    clearTape();
  }
}
