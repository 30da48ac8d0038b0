/**
 * Peers measured in the same run as our benches: PyTorch on the CPU through Debian's python3-torch
 * (threads = cores). Each returns null when the peer is not installed.
 */

const PYTHON = "/usr/bin/python3";

/** Runs a Python snippet and returns its stdout, or null when Python or torch is missing. */
export async function runPython(code: string): Promise<string | null> {
  try {
    const out = await new Deno.Command(PYTHON, { args: ["-c", code], stdout: "piped", stderr: "piped" })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
  } catch {
    return null;
  }
}

/** Best-of-5 ms of torch.matmul for the same problem on the CPU, or null without torch. */
export async function torchMatmulMs(
  m: number,
  n: number,
  k: number,
  transA: boolean,
  transB: boolean,
): Promise<number | null> {
  const out = await runPython(`
import os, time, torch
torch.set_num_threads(os.cpu_count())
a = torch.rand(${transA ? `${k}, ${m}` : `${m}, ${k}`})
b = torch.rand(${transB ? `${n}, ${k}` : `${k}, ${n}`})
f = lambda: ${transA ? "a.t()" : "a"} @ ${transB ? "b.t()" : "b"}
f()
best = 1e9
for _ in range(5):
    t = time.perf_counter(); f(); best = min(best, time.perf_counter() - t)
print(best * 1000)
`);
  return out === null ? null : Number(out);
}
