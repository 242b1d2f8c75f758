#!/usr/bin/env python3
"""Sum a CubeCL kernel log's per-kernel times by kernel: where a wgpu run's GPU time goes.

The log comes from `CUBECL_DEBUG_LOG=<file> CUBECL_DEBUG_OPTION=profile remem ...` (one line
`| <time> | <kernel>` per executed kernel; scripts/gpu-bench.sh keeps only those lines, each
run after a `== name` line). Only the last N kernel lines of each section count (`--last`,
default all), so the warm-up and autotuning at a run's start can be left out.

    python3 scripts/kernel_times.py profile.txt --last 2000
"""
import argparse
import collections
import re

LINE = re.compile(r"^\| ([0-9.]+)(ns|µs|ms|s) +\| (.*)$")
UNIT_MS = {"ns": 1e-6, "µs": 1e-3, "ms": 1.0, "s": 1000.0}


def sections(path):
    """(name, [(ms, kernel)]) per `== name` section of the file (one unnamed if none)."""
    out, name, rows = [], "", []
    for line in open(path, encoding="utf-8", errors="replace"):
        if line.startswith("== "):
            if rows:
                out.append((name, rows))
            name, rows = line[3:].strip(), []
            continue
        m = LINE.match(line.rstrip("\n"))
        if m:
            kernel = m.group(3).split("|")[0].strip()
            # Burn's kernels end in a hash of their settings: one name per kind.
            kernel = re.sub(r"_[0-9a-f]{6,}$", "", kernel)
            rows.append((float(m.group(1)) * UNIT_MS[m.group(2)], kernel))
    if rows:
        out.append((name, rows))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log")
    parser.add_argument("--last", type=int, default=0, help="kernel lines counted per section")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    for name, rows in sections(args.log):
        rows = rows[-args.last :] if args.last else rows
        total = sum(ms for ms, _ in rows)
        time, count = collections.Counter(), collections.Counter()
        for ms, kernel in rows:
            time[kernel] += ms
            count[kernel] += 1
        print(f"## {name or 'log'}: {len(rows)} kernels, {total:.1f} ms")
        print("| kernel | launches | ms | share |\n|---|---:|---:|---:|")
        for kernel, ms in time.most_common(args.top):
            print(f"| {kernel} | {count[kernel]} | {ms:.1f} | {100 * ms / total:.1f}% |")
        print()


if __name__ == "__main__":
    main()
