"""Writes tests/fixtures/gpt2_tiny/: a tiny GPT-2 with random weights in Hugging Face layout, twice
(bare keys; `transformer.`-prefixed keys with lm_head.weight and the attn.bias buffers), plus
expected.json: logits, loss and every parameter gradient for one batch, then the losses of 5 AdamW
steps. The model is written out here exactly as transformers' GPT2LMHeadModel computes it
(pre-LN blocks, gelu_new, attention scaled by 1/sqrt(head_dim), tied head); torch runs in float64
from float32 weights. Run: /usr/bin/python3 tests/reference/gpt2.py (Debian's python3-torch)."""
import json
import math
import pathlib
import sys

import torch

from safetensors_io import read_safetensors, write_safetensors

torch.manual_seed(0)
V, P, C, L, H = 61, 16, 16, 2, 2  # vocab, n_positions, n_embd, n_layer, n_head
B, T = 2, 11
OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "gpt2_tiny"


def rnd(*shape, std=0.1, mean=0.0):
    return (mean + std * torch.randn(*shape)).float().double()


params = {"wte.weight": rnd(V, C, std=0.3), "wpe.weight": rnd(P, C, std=0.1)}
for i in range(L):
    p = f"h.{i}."
    params.update({
        p + "ln_1.weight": rnd(C, mean=1.0), p + "ln_1.bias": rnd(C),
        p + "attn.c_attn.weight": rnd(C, 3 * C, std=0.3), p + "attn.c_attn.bias": rnd(3 * C),
        p + "attn.c_proj.weight": rnd(C, C, std=0.3), p + "attn.c_proj.bias": rnd(C),
        p + "ln_2.weight": rnd(C, mean=1.0), p + "ln_2.bias": rnd(C),
        p + "mlp.c_fc.weight": rnd(C, 4 * C, std=0.3), p + "mlp.c_fc.bias": rnd(4 * C),
        p + "mlp.c_proj.weight": rnd(4 * C, C, std=0.3), p + "mlp.c_proj.bias": rnd(C),
    })
params.update({"ln_f.weight": rnd(C, mean=1.0), "ln_f.bias": rnd(C)})
for t in params.values():
    t.requires_grad_(True)

ids = torch.randint(0, V, (B, T))
targets = torch.randint(0, V, (B, T))


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def forward(p):
    x = p["wte.weight"][ids] + p["wpe.weight"][torch.arange(T)]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(L):
        q = f"h.{i}."
        h = torch.nn.functional.layer_norm(x, (C,), p[q + "ln_1.weight"], p[q + "ln_1.bias"], 1e-5)
        qkv = h @ p[q + "attn.c_attn.weight"] + p[q + "attn.c_attn.bias"]
        qh, kh, vh = (t.view(B, T, H, C // H).transpose(1, 2) for t in qkv.split(C, dim=2))
        att = (qh @ kh.transpose(-1, -2)) / math.sqrt(C // H)
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        y = (att @ vh).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p[q + "attn.c_proj.weight"] + p[q + "attn.c_proj.bias"]
        h = torch.nn.functional.layer_norm(x, (C,), p[q + "ln_2.weight"], p[q + "ln_2.bias"], 1e-5)
        x = x + gelu_new(h @ p[q + "mlp.c_fc.weight"] + p[q + "mlp.c_fc.bias"]) @ p[q + "mlp.c_proj.weight"] + p[q + "mlp.c_proj.bias"]
    x = torch.nn.functional.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], 1e-5)
    logits = x @ p["wte.weight"].T
    return logits, torch.nn.functional.cross_entropy(logits.view(-1, V), targets.view(-1))


if len(sys.argv) == 3 and sys.argv[1] == "--check":
    # A directory written by lisa-webgpu's saveGPT2: config fields and tensors as transformers reads
    # them (bare or transformer.-prefixed keys, Conv1D weights (in, out)); prints the loss on the
    # fixture batch for the caller to compare.
    d = pathlib.Path(sys.argv[2])
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"], cfg
    assert (cfg["vocab_size"], cfg["n_positions"], cfg["n_embd"], cfg["n_layer"], cfg["n_head"]) == (V, P, C, L, H), cfg
    loaded = {k.removeprefix("transformer."): v for k, v in read_safetensors(d / "model.safetensors").items()}
    # What transformers ignores or ties: the causal-mask buffers, and lm_head (tied to wte).
    loaded = {k: v for k, v in loaded.items() if not k.endswith((".attn.bias", ".attn.masked_bias")) and k != "lm_head.weight"}
    assert set(loaded) == set(params), sorted(set(loaded) ^ set(params))
    for k, v in loaded.items():
        assert v.shape == params[k].shape, (k, v.shape, params[k].shape)
    _, check_loss = forward(loaded)
    print(json.dumps({"loss": check_loss.item()}))
    sys.exit(0)

config = {
    "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": V, "n_positions": P,
    "n_ctx": P, "n_embd": C, "n_layer": L, "n_head": H, "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
}
for style in ("bare", "transformer"):
    d = OUT / style
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    if style == "bare":
        tensors = dict(params)
    else:
        tensors = {"transformer." + k: v for k, v in params.items()}
        for i in range(L):  # the causal-mask buffers old checkpoints carry
            tensors[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(P, P)).view(1, 1, P, P)
            tensors[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        tensors["lm_head.weight"] = params["wte.weight"]
    write_safetensors(d / "model.safetensors", tensors)

logits, loss = forward(params)
loss.backward()
grads = {k: v.grad.flatten().tolist() for k, v in params.items()}

# 5 AdamW steps (PyTorch's AdamW; decay only on >= 2-D tensors, as nanoGPT groups them)
decay = [v for v in params.values() if v.dim() >= 2]
no_decay = [v for v in params.values() if v.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
step_losses = []
for _ in range(5):
    opt.zero_grad()
    _, l = forward(params)
    step_losses.append(l.item())
    l.backward()
    opt.step()

expected = {
    "batch": {"ids": ids.flatten().tolist(), "targets": targets.flatten().tolist(), "batchSize": B, "blockSize": T},
    "logits": logits.detach().flatten().tolist(),
    "loss": loss.item(),
    "grads": grads,
    "adamw": {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weightDecay": 0.01, "losses": step_losses},
    "torch": torch.__version__,
}
(OUT / "expected.json").write_text(json.dumps(expected) + "\n")
print(f"wrote {OUT} (loss {loss.item():.6f}, AdamW losses {[round(x, 5) for x in step_losses]})")
