"""Writes tests/fixtures/llama_tiny/: two tiny LLaMA models with random weights in Hugging Face's layout,
each with expected.json (logits, masked loss and every parameter gradient for one batch, then the losses
of 5 AdamW steps):
  gqa/        untied lm_head, grouped-query attention (4 query heads, 2 kv heads), rope_theta 1e4,
              rms_norm_eps 1e-6, F32 weights in one model.safetensors;
  tied_bf16/  lm_head tied to embed_tokens, rope_theta 5e5, rms_norm_eps 1e-5, BF16 weights in two
              shards with model.safetensors.index.json. Its reference numbers come from the BF16-rounded
              weights (what a loader sees after upcasting).
The model is written out here as transformers' LlamaForCausalLM computes it (modeling_llama: RMSNorm,
rotary embeddings with rotate_half, repeat_kv, causal softmax scaled by 1/sqrt(head_dim), SwiGLU MLP,
no biases; Linear weights (out, in)). As in gpt2.py, torch runs in float64 from float32 (or bf16)
weights; the rotary cos/sin tables are computed in float32 as transformers does, then upcast.
Run: /usr/bin/python3 tests/reference/llama.py (Debian's python3-torch).
With `--check DIR` it prints {"loss": ...} of a LLaMA directory (F32/BF16, one file or shards) on the
gqa fixture batch, for a test of a saver to compare."""
import json
import math
import pathlib
import struct
import sys

import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "llama_tiny"
V, D, H, HKV, I, L, P = 61, 32, 4, 2, 72, 2, 32  # vocab, hidden, heads, kv heads, intermediate, layers, max pos
HD = D // H
B, T = 2, 9
FIXTURES = {
    "gqa": {"tied": False, "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "dtype": "float32"},
    "tied_bf16": {"tied": True, "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "dtype": "bfloat16"},
}
ADAMW = {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weightDecay": 0.01}  # as gpt2.py


# ---- safetensors (F32 and BF16, little-endian), sharding as transformers' save_pretrained ----

DT = {"F32": (torch.float32, 4), "BF16": (torch.bfloat16, 2)}


def tensor_bytes(t, dtype):
    t = t.detach().to(DT[dtype][0]).contiguous()
    if dtype == "BF16":
        t = t.view(torch.int16)  # numpy has no bfloat16; the bits are the same
    assert sys.byteorder == "little"
    return t.numpy().tobytes()


def write_safetensors(path, tensors, dtype):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        data = tensor_bytes(t, dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    return offset


def read_safetensors(path):
    """Every F32/BF16 tensor of the file, as float64."""
    raw = pathlib.Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        buf = bytearray(raw[8 + n + a:8 + n + b])
        if e["dtype"] == "F32":
            t = torch.frombuffer(buf, dtype=torch.float32)
        elif e["dtype"] == "BF16":
            t = torch.frombuffer(buf, dtype=torch.int16).view(torch.bfloat16)
        else:
            raise AssertionError((name, e["dtype"]))
        out[name] = t.reshape(e["shape"]).double()
    return out


def read_dir(d):
    d = pathlib.Path(d)
    if (d / "model.safetensors").exists():
        return read_safetensors(d / "model.safetensors")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    out = {}
    for f in sorted(set(index["weight_map"].values())):
        out.update(read_safetensors(d / f))
    assert set(out) == set(index["weight_map"]), sorted(set(out) ^ set(index["weight_map"]))
    return out


# ---- the model ----

def make_params(tied, bf16):
    def rnd(*shape, std=0.1, mean=0.0):
        t = (mean + std * torch.randn(*shape)).float()
        if bf16:
            t = t.to(torch.bfloat16)  # round to nearest even, as torch.save/safetensors would store it
        return t.double()

    p = {"model.embed_tokens.weight": rnd(V, D, std=0.3)}
    for i in range(L):
        q = f"model.layers.{i}."
        p.update({
            q + "self_attn.q_proj.weight": rnd(H * HD, D, std=0.2),
            q + "self_attn.k_proj.weight": rnd(HKV * HD, D, std=0.2),
            q + "self_attn.v_proj.weight": rnd(HKV * HD, D, std=0.2),
            q + "self_attn.o_proj.weight": rnd(D, H * HD, std=0.2),
            q + "mlp.gate_proj.weight": rnd(I, D, std=0.2),
            q + "mlp.up_proj.weight": rnd(I, D, std=0.2),
            q + "mlp.down_proj.weight": rnd(D, I, std=0.15),
            q + "input_layernorm.weight": rnd(D, mean=1.0),
            q + "post_attention_layernorm.weight": rnd(D, mean=1.0),
        })
    p["model.norm.weight"] = rnd(D, mean=1.0)
    if not tied:
        p["lm_head.weight"] = rnd(V, D, std=0.3)
    return p


def rms_norm(x, w, eps):
    # LlamaRMSNorm: upcasts to float32 for half inputs; here everything is already float64.
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_tables(theta, t):
    # LlamaRotaryEmbedding (default rope, attention_scaling 1): inv_freq and the tables in float32.
    inv_freq = 1.0 / (theta ** (torch.arange(0, HD, 2, dtype=torch.int64).float() / HD))
    freqs = inv_freq[:, None].float() @ torch.arange(t).float()[None, :]  # [HD/2, T]
    emb = torch.cat((freqs.T, freqs.T), dim=-1)  # [T, HD]
    return emb.cos().double(), emb.sin().double()


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x, n_rep):
    b, hkv, t, hd = x.shape
    return x[:, :, None, :, :].expand(b, hkv, n_rep, t, hd).reshape(b, hkv * n_rep, t, hd)


def forward(p, ids, theta, eps):
    b, t = ids.shape
    x = p["model.embed_tokens.weight"][ids]
    cos, sin = rope_tables(theta, t)
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for i in range(L):
        q = f"model.layers.{i}."
        h = rms_norm(x, p[q + "input_layernorm.weight"], eps)
        qh = (h @ p[q + "self_attn.q_proj.weight"].T).view(b, t, H, HD).transpose(1, 2)
        kh = (h @ p[q + "self_attn.k_proj.weight"].T).view(b, t, HKV, HD).transpose(1, 2)
        vh = (h @ p[q + "self_attn.v_proj.weight"].T).view(b, t, HKV, HD).transpose(1, 2)
        qh = qh * cos + rotate_half(qh) * sin
        kh = kh * cos + rotate_half(kh) * sin
        kh, vh = repeat_kv(kh, H // HKV), repeat_kv(vh, H // HKV)
        att = (qh @ kh.transpose(2, 3)) * HD ** -0.5
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        y = (att @ vh).transpose(1, 2).reshape(b, t, H * HD)
        x = x + y @ p[q + "self_attn.o_proj.weight"].T
        h = rms_norm(x, p[q + "post_attention_layernorm.weight"], eps)
        g = torch.nn.functional.silu(h @ p[q + "mlp.gate_proj.weight"].T) * (h @ p[q + "mlp.up_proj.weight"].T)
        x = x + g @ p[q + "mlp.down_proj.weight"].T
    x = rms_norm(x, p["model.norm.weight"], eps)
    head = p.get("lm_head.weight", p["model.embed_tokens.weight"])
    return x @ head.T


def masked_loss(logits, targets, mask):
    rows = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
    m = mask.reshape(-1).double()
    return (rows * m).sum() / m.sum()


def batch():
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.2).float()
    mask[0, :3] = 0  # a "prompt" that does not count
    mask[1, -1] = 0
    return ids, targets, mask


def config(f):
    # As LlamaConfig.save_pretrained writes it (keys sorted, indent 2; transformers 4.4x fields).
    return {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "head_dim": HD, "hidden_act": "silu", "hidden_size": D,
        "initializer_range": 0.02, "intermediate_size": I, "max_position_embeddings": P, "mlp_bias": False,
        "model_type": "llama", "num_attention_heads": H, "num_hidden_layers": L, "num_key_value_heads": HKV,
        "pretraining_tp": 1, "rms_norm_eps": f["rms_norm_eps"], "rope_scaling": None,
        "rope_theta": f["rope_theta"], "tie_word_embeddings": f["tied"], "torch_dtype": f["dtype"],
        "transformers_version": "4.46.0", "use_cache": True, "vocab_size": V,
    }


def r8(xs):
    """8 significant digits: ample for float32 comparisons, and keeps the fixture small."""
    return [float(f"{x:.8g}") for x in xs]


def write_fixture(name, f):
    torch.manual_seed(0)
    bf16 = f["dtype"] == "bfloat16"
    params = make_params(f["tied"], bf16)
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("*.safetensors*"):
        old.unlink()
    (d / "config.json").write_text(json.dumps(config(f), indent=2, sort_keys=True) + "\n")
    if not bf16:
        write_safetensors(d / "model.safetensors", params, "F32")
    else:
        names = list(params)
        split = names.index("model.layers.1.self_attn.q_proj.weight")
        shards = [names[:split], names[split:]]
        weight_map, total = {}, 0
        for k, shard in enumerate(shards):
            file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            total += write_safetensors(d / file, {n: params[n] for n in shard}, "BF16")
            weight_map.update({n: file for n in shard})
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    # What a loader sees must be what the reference used.
    loaded = read_dir(d)
    assert set(loaded) == set(params) and all(torch.equal(loaded[k], params[k]) for k in params)

    ids, targets, mask = batch()
    for t in params.values():
        t.requires_grad_(True)
    logits = forward(params, ids, f["rope_theta"], f["rms_norm_eps"])
    loss = masked_loss(logits, targets, mask)
    loss.backward()
    grads = {k: r8(v.grad.flatten().tolist()) for k, v in params.items()}

    # 5 AdamW steps (PyTorch's AdamW; decay only on >= 2-D tensors, as gpt2.py / nanoGPT group them)
    decay = [v for v in params.values() if v.dim() >= 2]
    no_decay = [v for v in params.values() if v.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": ADAMW["weightDecay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=ADAMW["lr"], betas=tuple(ADAMW["betas"]), eps=ADAMW["eps"])
    step_losses = []
    for _ in range(5):
        opt.zero_grad()
        l = masked_loss(forward(params, ids, f["rope_theta"], f["rms_norm_eps"]), targets, mask)
        step_losses.append(l.item())
        l.backward()
        opt.step()

    expected = {
        "batch": {"ids": ids.flatten().tolist(), "targets": targets.flatten().tolist(),
                  "mask": mask.flatten().tolist(), "batchSize": B, "blockSize": T},
        "config": {"vocabSize": V, "hiddenSize": D, "numHeads": H, "numKvHeads": HKV, "headDim": HD,
                   "intermediateSize": I, "numLayers": L, "ropeTheta": f["rope_theta"],
                   "rmsNormEps": f["rms_norm_eps"], "tied": f["tied"], "dtype": f["dtype"]},
        "logits": r8(logits.detach().flatten().tolist()),
        "loss": loss.item(),
        "grads": grads,
        "adamw": {**ADAMW, "losses": step_losses},
        "torch": torch.__version__,
    }
    (d / "expected.json").write_text(json.dumps(expected) + "\n")
    print(f"wrote {d} (loss {loss.item():.6f}, AdamW losses {[round(x, 5) for x in step_losses]})")


if len(sys.argv) == 3 and sys.argv[1] == "--check":
    d = pathlib.Path(sys.argv[2])
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["architectures"] == ["LlamaForCausalLM"], cfg
    dims = (cfg["vocab_size"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["intermediate_size"], cfg["num_hidden_layers"])
    assert dims == (V, D, H, HKV, I, L), cfg
    loaded = read_dir(d)
    tied = cfg.get("tie_word_embeddings", False)  # LlamaConfig's default: untied
    if tied:  # transformers ignores a stored lm_head.weight when tied
        loaded.pop("lm_head.weight", None)
    expect = set(make_params(tied, False))
    assert set(loaded) == expect, sorted(set(loaded) ^ expect)
    ids, targets, mask = batch()
    logits = forward(loaded, ids, cfg.get("rope_theta", 10000.0), cfg.get("rms_norm_eps", 1e-6))
    print(json.dumps({"loss": masked_loss(logits, targets, mask).item()}))
    sys.exit(0)

for fixture_name, fixture in FIXTURES.items():
    write_fixture(fixture_name, fixture)
