#!/usr/bin/env python3
"""Read a file remem wrote with Python's own `safetensors` package and check it.

    python3 scripts/check_safetensors.py FILE EXPECTED.json

EXPECTED.json (tests/python.rs writes it from Rust) gives, for each tensor, its dtype, shape, a
few values at given flat positions and the sum of its values, and the metadata entries the file
must hold. The script checks that:

- `safetensors.safe_open` reads the file (the reference reader, not remem's);
- every tensor is there with that dtype, shape and those exact values, and no other tensor;
- the metadata holds those entries, `remem.format` is 2, and JSON entries parse;
- `remem.checksum` equals the checksum recomputed here from what Python read (the rule in
  remem's src/io.rs: FNV-1a over the sorted metadata, then the sorted tensors);
- for a checkpoint, the token embedding's shape follows from the config in the metadata.

It prints one line per problem and exits 1 if there is any. The `safetensors` and `numpy`
packages are installed (pinned) into ~/.cache/remem/python when Python lacks them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGES = ["safetensors==0.8.0", "numpy==2.4.6"]


def imports():
    try:
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError:
        home = Path(os.environ.get("REMEM_PYTHON", Path.home() / ".cache/remem/python"))
        if not (home / "safetensors").exists():
            home.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "--target", str(home), *PACKAGES],
                check=True,
            )
        sys.path.insert(0, str(home))
    import numpy
    from safetensors import safe_open
    return numpy, safe_open


NAMES = {"float32": "F32", "float64": "F64", "float16": "F16", "uint8": "U8", "uint32": "U32",
         "int32": "I32", "int64": "I64"}


def fnv1a(h, data):
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def checksum(metadata, tensors):
    h = 0xCBF29CE484222325
    for key in sorted(k for k in metadata if k != "remem.checksum"):
        h = fnv1a(h, key.encode() + b"\0" + metadata[key].encode() + b"\0")
    for name in sorted(tensors):
        array = tensors[name]
        h = fnv1a(h, name.encode() + b"\0" + NAMES[str(array.dtype)].encode() + b"\0")
        for d in array.shape:
            h = fnv1a(h, int(d).to_bytes(8, "little"))
        h = fnv1a(h, array.astype(array.dtype.newbyteorder("<")).tobytes())
    return f"{h:016x}"


def main():
    path, expected_path = sys.argv[1], sys.argv[2]
    numpy, safe_open = imports()
    expected = json.loads(Path(expected_path).read_text())
    problems = []
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
        tensors = {name: f.get_tensor(name) for name in f.keys()}

    want = expected["tensors"]
    for name in sorted(set(tensors) | set(want)):
        if name not in tensors:
            problems.append(f"tensor {name}: missing")
            continue
        if name not in want:
            problems.append(f"tensor {name}: not expected")
            continue
        array, w = tensors[name], want[name]
        if NAMES.get(str(array.dtype)) != w["dtype"]:
            problems.append(f"tensor {name}: dtype {array.dtype}, expected {w['dtype']}")
        if list(array.shape) != w["shape"]:
            problems.append(f"tensor {name}: shape {list(array.shape)}, expected {w['shape']}")
            continue
        flat = array.reshape(-1)
        for position, value in w["values"]:
            got = flat[position].item()
            if not (got == value or (got != got and value is None)):
                problems.append(f"tensor {name}[{position}] = {got}, expected {value}")
        total = float(numpy.sum(flat.astype(numpy.float64)))
        if abs(total - w["sum"]) > 1e-9 * max(1.0, numpy.sum(numpy.abs(flat.astype(numpy.float64)))):
            problems.append(f"tensor {name}: sum {total}, expected {w['sum']}")

    for key, value in expected["metadata"].items():
        if metadata.get(key) != value:
            problems.append(f"metadata {key}: {metadata.get(key)!r}, expected {value!r}")
    if metadata.get("remem.format") != "2":
        problems.append(f"metadata remem.format: {metadata.get('remem.format')!r}, expected '2'")
    for key in ["config", "model", "tokenizer", "progress", "param_ids"]:
        if key in metadata:
            try:
                json.loads(metadata[key])
            except ValueError as e:
                problems.append(f"metadata {key}: not JSON ({e})")
    recomputed = checksum(metadata, tensors)
    if metadata.get("remem.checksum") != recomputed:
        problems.append(
            f"remem.checksum {metadata.get('remem.checksum')!r}, recomputed {recomputed!r}")
    if metadata.get("remem.file") == "checkpoint":
        model = json.loads(metadata["config"])["model"]
        shape = list(tensors["tokens.weight"].shape)
        if shape != [model["vocab_size"], model["d_model"]]:
            problems.append(f"tokens.weight has shape {shape}, the config says "
                            f"[{model['vocab_size']}, {model['d_model']}]")

    for p in problems:
        print(f"{path}: {p}")
    if problems:
        sys.exit(1)
    print(f"{path}: {len(tensors)} tensors and {len(metadata)} metadata entries read by Python's "
          f"safetensors agree with remem")


if __name__ == "__main__":
    main()
