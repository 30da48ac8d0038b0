"""safetensors read/write for the reference scripts, with torch only (the safetensors package is not
installable here): 8-byte little-endian header length, JSON header, little-endian F32 data."""
import json
import pathlib
import struct

import torch


def read_safetensors(path):
    """Every F32 tensor of the file, as float64."""
    raw = pathlib.Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", (name, e["dtype"])
        a, b = e["data_offsets"]
        out[name] = torch.frombuffer(bytearray(raw[8 + n + a:8 + n + b]), dtype=torch.float32).reshape(e["shape"]).double()
    return out


def write_safetensors(path, tensors):
    """Writes tensors as F32, the header padded so the data starts 8-byte aligned."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().float().contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
