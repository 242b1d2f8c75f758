#!/usr/bin/env python3
"""Ask a qa1 model about two moves and say whether it reads the name or takes the last place.

    python3 scripts/qa1_probe.py --checkpoint runs/qa1-moves2 [--remem PATH] [--cases 24]

Each case is held-out book text (`remem data --split test`, with the story words masked as the
task masks them) around two moves of different people to different places, then
`\\nWhere is <who>? `, the whole `segments * segment_len + 1 - 9` bytes long, so the question
ends where training put it (the config's input, less the widest answer). Half the cases ask
about the first mover, half about the last. `remem stream --generate 8` answers each. A model
that reads the question gets both halves right; one that answers the last place named gets the
second half right and answers the first half with the other person's place.
"""

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PEOPLE = ["Mary", "John", "Sandra", "Daniel", "Fred", "Julie"]
PLACES = ["kitchen", "garden", "office", "bathroom", "hallway", "bedroom"]
VERBS = ["went", "moved", "journeyed", "travelled"]
MASKED = PEOPLE + PLACES + ["apple", "football", "milk", "book"]


def input_len(checkpoint: Path) -> int:
    """segments * segment_len + 1 less the widest answer (`bathroom.`), from the run's config."""
    config = (checkpoint / "config.toml").read_text()
    segments = int(re.search(r"(?m)^segments = (\d+)", config).group(1))
    segment_len = int(re.search(r"(?m)^segment_len = (\d+)", config).group(1))
    return segments * segment_len + 1 - (max(map(len, PLACES)) + 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a qa1 run folder")
    parser.add_argument("--remem", default="remem", help="the remem binary")
    parser.add_argument("--data", default=str(Path.home() / ".cache/remem/data/books"))
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "test.txt"
        subprocess.run(
            [args.remem, "data", "--data", args.data, "--split", "test", "--out", str(split),
             "--max-bytes", "200000"],
            check=True, capture_output=True,
        )
        text = split.read_text(encoding="utf-8", errors="replace")
    for word in MASKED:
        text = re.sub(rf"(?i)\b{word}\b", lambda m: "x" * len(m.group(0)), text)
    sentences = [
        s.strip() + " "
        for s in re.split(r"(?<=[.!?])\s+", text)
        if 20 < len(s) < 120 and s.isascii()
    ]
    total = input_len(args.checkpoint)
    rng = random.Random(args.seed)
    counts = {"first": [0, 0, 0], "last": [0, 0, 0]}  # right, the other place, neither
    for case in range(args.cases):
        a, b = rng.sample(PEOPLE, 2)
        pa, pb = rng.sample(PLACES, 2)
        asked = "first" if case % 2 == 0 else "last"
        who, right, other = (a, pa, pb) if asked == "first" else (b, pb, pa)
        question = f"\nWhere is {who}? "
        first = f"{a} {rng.choice(VERBS)} to the {pa}. "
        second = f"{b} {rng.choice(VERBS)} to the {pb}. "
        # Book text between the moves, short enough that the whole story stays in the input
        # (a short model's input can hold no sentence between them at all).
        room = total - len(question) - len(first) - len(second)
        fits = [s for s in sentences if len(s) <= room]
        story = first + (rng.choice(fits) if fits else "") + second
        before = ""
        while len(before) + len(story) + len(question) < total:
            before += rng.choice(sentences)
        body = before + story
        prompt = body[len(body) + len(question) - total:] + question
        out = subprocess.run(
            [args.remem, "stream", "--checkpoint", str(args.checkpoint), "--text", prompt,
             "--generate", "8", "--device", "cpu", "--quiet"],
            check=True, capture_output=True, text=True,
        ).stdout  # the 8 bytes generated
        slot = 0 if right in out else 1 if other in out else 2
        counts[asked][slot] += 1
    print(json.dumps({"asked_first_mover": dict(zip(["right", "last_place", "neither"], counts["first"])),
                      "asked_last_mover": dict(zip(["right", "first_place", "neither"], counts["last"]))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
