/**
 * Peers measured in the same run as our benches: PyTorch (experiments/child.ts finds it) on the CPU
 * with threads = cores. Each returns null when the peer is not installed.
 */
import { runPython } from "./child.ts";

/** Best-of-10 ms of torch.matmul for the same problem on the CPU, or null without torch. */
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
for _ in range(10):
    t = time.perf_counter(); f(); best = min(best, time.perf_counter() - t)
print(best * 1000)
`);
  return out === null ? null : Number(out);
}

/** The training-step configuration both sides run. */
export interface StepConfig {
  nLayer: number;
  nEmbd: number;
  nHead: number;
  vocabSize: number;
  blockSize: number;
  batchSize: number;
}

/**
 * Milliseconds per GPT-2 training step (forward, backward, AdamW) in PyTorch on the CPU with
 * threads = cores, best of 10 after 3 warm-up steps; null without torch.
 */
export async function torchTrainStepMs(c: StepConfig): Promise<{ ms: number; threads: number } | null> {
  const out = await runPython(`
import math, os, time, torch
import torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(os.cpu_count()); torch.manual_seed(0)
L, C, H, V, T, B = ${c.nLayer}, ${c.nEmbd}, ${c.nHead}, ${c.vocabSize}, ${c.blockSize}, ${c.batchSize}
class Block(nn.Module):
    def __init__(s):
        super().__init__()
        s.ln_1, s.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        s.c_attn, s.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        s.c_fc, s.c_proj2 = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
        s.register_buffer("mask", torch.tril(torch.ones(T, T, dtype=torch.bool)))
    def forward(s, x):
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in s.c_attn(s.ln_1(x)).split(C, dim=2))
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(C // H)).masked_fill(~s.mask, float("-inf")).softmax(-1)
        x = x + s.c_proj((att @ v).transpose(1, 2).reshape(B, T, C))
        return x + s.c_proj2(F.gelu(s.c_fc(s.ln_2(x)), approximate="tanh"))
class GPT(nn.Module):
    def __init__(s):
        super().__init__()
        s.wte, s.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        s.h = nn.ModuleList(Block() for _ in range(L))
        s.ln_f = nn.LayerNorm(C)
    def forward(s, idx, tgt):
        x = s.wte(idx) + s.wpe(torch.arange(T))
        for b in s.h: x = b(x)
        return F.cross_entropy((s.ln_f(x) @ s.wte.weight.T).view(-1, V), tgt.view(-1))
m = GPT(); opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
idx, tgt = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
def step():
    opt.zero_grad(set_to_none=True); m(idx, tgt).backward(); opt.step()
for _ in range(3): step()
best = 1e9
for _ in range(10):
    t = time.perf_counter(); step(); best = min(best, time.perf_counter() - t)
print(best * 1000, torch.get_num_threads())
`);
  if (out === null) return null;
  const [ms, threads] = out.split(/\s+/).map(Number);
  return { ms, threads };
}
