"""Checks a PEFT LoRA export against merged weights, with torch only (PEFT is not installable here):
rebuilds W + scaling·(B·A)ᵀ for every adapter of ADAPTER_DIR from BASE_DIR's weights and compares it
with MERGED_DIR's. Prints {"max_abs_diff": …, "adapters": n}.
Run: /usr/bin/python3 tests/reference/peft_check.py BASE_DIR ADAPTER_DIR MERGED_DIR"""
import json
import pathlib
import sys

from safetensors_io import read_safetensors as read

base_dir, adapter_dir, merged_dir = (pathlib.Path(p) for p in sys.argv[1:4])
cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
assert cfg["peft_type"] == "LORA" and cfg["fan_in_fan_out"] is True, cfg
scaling = cfg["lora_alpha"] / (cfg["r"] ** 0.5 if cfg.get("use_rslora") else cfg["r"])
strip = lambda d: {k.removeprefix("transformer."): v for k, v in d.items()}
base = strip(read(base_dir / "model.safetensors"))
merged = strip(read(merged_dir / "model.safetensors"))
adapter = read(adapter_dir / "adapter_model.safetensors")
prefix = "base_model.model.transformer."
worst, modules = 0.0, set()
for key in adapter:
    assert key.startswith(prefix) and key.endswith((".lora_A.weight", ".lora_B.weight")), key
    modules.add(key[len(prefix):].rsplit(".lora_", 1)[0])
for m in sorted(modules):
    a, b = adapter[f"{prefix}{m}.lora_A.weight"], adapter[f"{prefix}{m}.lora_B.weight"]
    w = base[f"{m}.weight"]  # Conv1D: (in, out)
    assert a.shape == (cfg["r"], w.shape[0]) and b.shape == (w.shape[1], cfg["r"]), (m, a.shape, b.shape, w.shape)
    rebuilt = w + scaling * (b @ a).T
    worst = max(worst, (rebuilt - merged[f"{m}.weight"]).abs().max().item())
print(json.dumps({"max_abs_diff": worst, "adapters": len(modules)}))
