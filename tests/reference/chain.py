"""Writes tests/fixtures/chain.json: LayerNorm -> Linear -> GELU -> Linear -> masked cross-entropy,
computed by PyTorch in float64 from float32 inputs, with the loss, logits and every gradient.
Run: /usr/bin/python3 tests/reference/chain.py (Debian's python3-torch)."""
import json
import pathlib

import torch

torch.manual_seed(0)
rows, c, hidden, vocab = 6, 8, 16, 11


def rand(*shape, scale=1.0):
    # float32 values, so the WebGPU side starts from exactly the same numbers
    return (torch.randn(*shape) * scale).float().double().requires_grad_(True)


x = rand(rows, c)
ln_g = (1 + 0.1 * torch.randn(c)).float().double().requires_grad_(True)
ln_b = rand(c, scale=0.1)
w1 = rand(c, hidden, scale=0.3)  # stored (in, out) like GPT-2's Conv1D
b1 = rand(hidden, scale=0.1)
w2 = rand(hidden, vocab, scale=0.3)
b2 = rand(vocab, scale=0.1)
targets = torch.randint(0, vocab, (rows,))
mask = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64)

h = torch.nn.functional.layer_norm(x, (c,), ln_g, ln_b, eps=1e-5)
a = torch.nn.functional.gelu(h @ w1 + b1, approximate="tanh")
logits = a @ w2 + b2
per_token = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
loss = (per_token * mask).sum() / mask.sum()
loss.backward()

tensors = {"x": x, "ln_g": ln_g, "ln_b": ln_b, "w1": w1, "b1": b1, "w2": w2, "b2": b2}
fixture = {
    "sizes": {"rows": rows, "c": c, "hidden": hidden, "vocab": vocab},
    "inputs": {k: {"shape": list(v.shape), "data": v.detach().flatten().tolist()} for k, v in tensors.items()},
    "targets": targets.tolist(),
    "mask": mask.tolist(),
    "logits": logits.detach().flatten().tolist(),
    "loss": loss.item(),
    "grads": {k: v.grad.flatten().tolist() for k, v in tensors.items()},
    "torch": torch.__version__,
}
out = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "chain.json"
out.write_text(json.dumps(fixture, indent=1) + "\n")
print(f"wrote {out} (loss {loss.item():.6f}, torch {torch.__version__})")
