/**
 * Peers measured in the same run as our benches: PyTorch (experiments/child.ts finds it) on the CPU
 * with threads = cores. Each returns null when the peer is not installed.
 */
import { runPython } from "./child.ts";

/**
 * Python prelude of every peer: `dev` is CUDA when torch sees a GPU (TF32 off, so both sides run
 * fp32), else the CPU with threads = cores; `timed(f, reps)` is the best-of-reps ms of f(), with
 * `torch.cuda.synchronize()` around each call on a GPU.
 */
const PRELUDE = `
import math, os, time, torch
import torch.nn as nn, torch.nn.functional as F
cuda = torch.cuda.is_available()
dev = torch.device("cuda" if cuda else "cpu")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)
sync = torch.cuda.synchronize if cuda else (lambda: None)
has_sdpa = hasattr(F, "scaled_dot_product_attention")  # torch >= 2.0
def timed(f, reps, warm=3):
    for _ in range(warm): f()
    best = 1e9
    for _ in range(reps):
        sync(); t = time.perf_counter(); f(); sync(); best = min(best, time.perf_counter() - t)
    return best * 1000
`;

/** What the peer ran on: `pytorch cuda (NAME)` or `pytorch cpu (N threads)`. */
export async function torchDevice(): Promise<string | null> {
  const out = await runPython(`${PRELUDE}
print(f"pytorch cuda ({torch.cuda.get_device_name(0)})" if cuda else f"pytorch cpu ({torch.get_num_threads()} threads)")`);
  return out;
}

/** Best-of-10 ms of torch.matmul for the same problem (on the GPU when torch sees one), or null without torch. */
export async function torchMatmulMs(
  m: number,
  n: number,
  k: number,
  transA: boolean,
  transB: boolean,
): Promise<number | null> {
  const out = await runPython(`${PRELUDE}
a = torch.rand(${transA ? `${k}, ${m}` : `${m}, ${k}`}, device=dev)
b = torch.rand(${transB ? `${n}, ${k}` : `${k}, ${n}`}, device=dev)
print(timed(lambda: ${transA ? "a.t()" : "a"} @ ${transB ? "b.t()" : "b"}, 10))
`);
  return out === null ? null : Number(out);
}

/**
 * Best-of-10 ms of causal attention forward + backward on [B, H, T, hd] q, k, v: manual (scores,
 * masked softmax, ·V, as eager GPT-2 code does) and torch's scaled_dot_product_attention (null
 * before torch 2.0).
 */
export async function torchAttentionMs(
  b: number,
  h: number,
  t: number,
  hd: number,
): Promise<{ manual: number; sdpa: number | null } | null> {
  const out = await runPython(`${PRELUDE}
q, k, v = (torch.rand(${b}, ${h}, ${t}, ${hd}, device=dev, requires_grad=True) for _ in range(3))
g = torch.rand(${b}, ${h}, ${t}, ${hd}, device=dev)
mask = torch.tril(torch.ones(${t}, ${t}, dtype=torch.bool, device=dev))
def manual():
    att = ((q @ k.transpose(-1, -2)) / math.sqrt(${hd})).masked_fill(~mask, float("-inf")).softmax(-1)
    (att @ v).backward(g)
def sdpa():
    F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(g)
print(timed(manual, 10), timed(sdpa, 10) if has_sdpa else "none")
`);
  if (out === null) return null;
  const [manual, sdpa] = out.split(/\s+/);
  return { manual: Number(manual), sdpa: sdpa === "none" ? null : Number(sdpa) };
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
 * Milliseconds per GPT-2 training step (forward, backward, AdamW) in PyTorch eager fp32 (on the GPU
 * when torch sees one), best of 10 after 3 warm-up steps, with manual attention (as our bench's model
 * computes it) and with scaled_dot_product_attention (null before torch 2.0); null without torch.
 */
export async function torchTrainStepMs(
  c: StepConfig,
): Promise<{ ms: number; sdpaMs: number | null; device: string } | null> {
  const out = await runPython(`${PRELUDE}
L, C, H, V, T, B = ${c.nLayer}, ${c.nEmbd}, ${c.nHead}, ${c.vocabSize}, ${c.blockSize}, ${c.batchSize}
class Block(nn.Module):
    def __init__(s, sdpa):
        super().__init__()
        s.sdpa = sdpa
        s.ln_1, s.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        s.c_attn, s.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        s.c_fc, s.c_proj2 = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
        s.register_buffer("mask", torch.tril(torch.ones(T, T, dtype=torch.bool)))
    def forward(s, x):
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in s.c_attn(s.ln_1(x)).split(C, dim=2))
        if s.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = ((q @ k.transpose(-1, -2)) / math.sqrt(C // H)).masked_fill(~s.mask, float("-inf")).softmax(-1)
            y = att @ v
        x = x + s.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + s.c_proj2(F.gelu(s.c_fc(s.ln_2(x)), approximate="tanh"))
class GPT(nn.Module):
    def __init__(s, sdpa):
        super().__init__()
        s.wte, s.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        s.h = nn.ModuleList(Block(sdpa) for _ in range(L))
        s.ln_f = nn.LayerNorm(C)
    def forward(s, idx, tgt):
        x = s.wte(idx) + s.wpe(torch.arange(T, device=idx.device))
        for b in s.h: x = b(x)
        return F.cross_entropy((s.ln_f(x) @ s.wte.weight.T).view(-1, V), tgt.view(-1))
idx, tgt = torch.randint(0, V, (B, T), device=dev), torch.randint(0, V, (B, T), device=dev)
def run(sdpa):
    m = GPT(sdpa).to(dev); opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    def step():
        opt.zero_grad(set_to_none=True); m(idx, tgt).backward(); opt.step()
    ms = timed(step, 10)
    del m, opt
    return ms
print(run(False), run(True) if has_sdpa else "none", "cuda" if cuda else f"cpu-{torch.get_num_threads()}")
`);
  if (out === null) return null;
  const [ms, sdpaMs, device] = out.split(/\s+/);
  return { ms: Number(ms), sdpaMs: sdpaMs === "none" ? null : Number(sdpaMs), device };
}
