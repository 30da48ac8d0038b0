/** add (with bias broadcast), mul, scale: forward and backward side by side. */
import { vectorWidth } from "../../kernels/kernel.ts";
import { binaryKernel, scaleKernel } from "../../kernels/elementwise.ts";
import { needsGrad, record } from "../autograd.ts";
import { empty, type Tensor } from "../tensor.ts";
import { expectF32, expectSameGpu, fmt } from "./checks.ts";
import { vec4Input } from "./pack.ts";
import { sumColumns } from "./reduce.ts";

/** Elements of `b` repeat every `period` elements of `a`: b's shape is a's or its trailing part. */
function period(op: string, a: Tensor, b: Tensor): number {
  expectF32(op, a);
  expectF32(op, b);
  expectSameGpu(op, a, b);
  const k = b.shape.length;
  const tail = a.shape.slice(a.shape.length - k);
  if (k > a.shape.length || tail.some((d, i) => d !== b.shape[i])) {
    throw new Error(
      `${op}: shapes ${fmt(a.shape)} and ${
        fmt(b.shape)
      } do not broadcast (the second must equal the first's trailing dimensions)`,
    );
  }
  return b.size;
}

function binary(op: "add" | "mul", a: Tensor, b: Tensor): Tensor {
  const p = period(op, a, b);
  const out = empty(a.gpu, a.shape, { name: op });
  const w = vectorWidth(a.size, p);
  const [ai, bi] = [vec4Input(a, op, w), vec4Input(b, op, w)];
  a.gpu.dispatch(binaryKernel(op, a.size, p, ai.src, bi.src), [ai.binding, bi.binding, out.binding(op)]);
  ai.done();
  bi.done();
  return out;
}

/** a + b, where b has a's shape or its trailing dimensions (a bias). */
export function add(a: Tensor, b: Tensor): Tensor {
  const out = binary("add", a, b);
  const broadcast = b.size !== a.size;
  return record("add", out, [a, b], [], (g) => [
    needsGrad(a) ? g : null,
    needsGrad(b) ? (broadcast ? sumColumns(g, a.size / b.size, b.size, b.shape) : g) : null,
  ]);
}

/** a ⊙ b, where b has a's shape or its trailing dimensions. */
export function mul(a: Tensor, b: Tensor): Tensor {
  const out = binary("mul", a, b);
  const broadcast = b.size !== a.size;
  return record("mul", out, [a, b], [needsGrad(a) && b, needsGrad(b) && a], (g) => {
    const da = needsGrad(a) ? binary("mul", g, b) : null;
    let db: Tensor | null = null;
    if (needsGrad(b)) {
      const ga = binary("mul", g, a);
      if (!broadcast) db = ga;
      else {
        db = sumColumns(ga, a.size / b.size, b.size, b.shape);
        ga.dispose();
      }
    }
    return [da, db];
  });
}

/** c · a for a constant c. */
export function scale(a: Tensor, c: number): Tensor {
  expectF32("scale", a);
  const run = (x: Tensor) => {
    const out = empty(x.gpu, x.shape, { name: "scale" });
    x.gpu.dispatch(
      scaleKernel(x.size, c),
      [x.binding("scale"), out.binding("scale")],
    );
    return out;
  };
  return record("scale", run(a), [a], [], (g) => [run(g)]);
}
