#!/usr/bin/env python3
"""Write the reference fixture for remem's GGUF reader: what llama.cpp's `gguf` package reads.

    python3 scripts/gguf_fixture.py FILE.gguf OUT.json

Needs the `gguf` package (pip, llama.cpp's gguf-py) and numpy. For a few tensors of each type in
the file it records the row-major shape, the first and last 16 dequantised weights and the sum of
all of them (float64), and a few metadata values and array lengths. Never the weights themselves:
tests/gguf.rs reads the cached file (`scripts/fetch_models.py smollm2`) and must agree.

tests/fixtures/smollm2-gguf.json was written with gguf 0.19.0 and numpy 2.4.6.
"""

import importlib.metadata
import json
import sys

import gguf
import numpy as np
from gguf.quants import dequantize

TENSORS = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
           "blk.29.ffn_down.weight", "blk.0.attn_norm.weight", "output_norm.weight"]
SCALARS = ["general.architecture", "llama.block_count", "llama.embedding_length",
           "llama.feed_forward_length", "llama.attention.head_count",
           "llama.attention.head_count_kv", "llama.rope.freq_base",
           "llama.attention.layer_norm_rms_epsilon", "tokenizer.ggml.model",
           "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"]
ARRAYS = ["tokenizer.ggml.tokens", "tokenizer.ggml.merges"]


def main():
    path, out = sys.argv[1], sys.argv[2]
    reader = gguf.GGUFReader(path)
    by_name = {t.name: t for t in reader.tensors}
    tensors = {}
    for name in TENSORS:
        t = by_name[name]
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape)]
        flat = w.reshape(-1)
        tensors[name] = {
            "type": t.tensor_type.name,
            "shape": shape,
            "first16": [float(x) for x in flat[:16]],
            "last16": [float(x) for x in flat[-16:]],
            "sum": float(flat.astype(np.float64).sum()),
        }
    metadata = {key: reader.fields[key].contents() for key in SCALARS}
    arrays = {key: len(reader.fields[key].data) for key in ARRAYS}
    samples = {key: [reader.fields[key].contents(i) for i in (0, 1, 1000)] for key in ARRAYS}
    fixture = {
        "file": path.rsplit("/", 1)[-1],
        "reference": f"gguf {importlib.metadata.version('gguf')}, numpy {np.__version__}",
        "tensor_count": len(reader.tensors),
        "tensors": tensors,
        "metadata": metadata,
        "array_lengths": arrays,
        "array_samples": samples,
    }
    with open(out, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
