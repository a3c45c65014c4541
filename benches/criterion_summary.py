#!/usr/bin/env python3
"""Prints the medians criterion saved for `cargo bench --bench decisions` as a Markdown table.

Usage: python3 benches/criterion_summary.py [target/criterion] [regex]

Reads <dir>/<group>/<bench>/new/{benchmark,estimates}.json (what the last run measured) and
prints one row per benchmark: its id, the median and its 95% confidence interval, and, for
throughput benchmarks, the median per element.
"""

import json
import os
import re
import sys


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def results(root):
    """Each benchmark criterion saved under `root`: (full id, benchmark.json, estimates.json)."""
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        yield bench.get("full_id") or bench.get("title"), bench, est


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
    pattern = re.compile(sys.argv[2]) if len(sys.argv) > 2 else None
    rows = []
    for full_id, bench, est in results(root):
        if pattern and not pattern.search(full_id):
            continue
        med = est["median"]
        per = ""
        tp = bench.get("throughput") or {}
        n = tp.get("Elements") or tp.get("elements")
        if n:
            per = fmt(med["point_estimate"] / n) + f" per decision ({n})"
        rows.append((full_id, med["point_estimate"], med["confidence_interval"]["lower_bound"],
                     med["confidence_interval"]["upper_bound"], per))
    rows.sort()
    print("| benchmark | median | 95% CI | per element |")
    print("|---|---:|---|---|")
    for full_id, m, lo, hi, per in rows:
        print(f"| `{full_id}` | {fmt(m)} | {fmt(lo)} – {fmt(hi)} | {per} |")


if __name__ == "__main__":
    main()
