#!/usr/bin/env python3
"""Side-by-side comparison of two builds of the `decisions` benchmark, in one run.

The machine the benchmarks run on is shared, so figures from separate runs are not
comparable. This runs a "before" and an "after" bench binary interleaved (B A A B …), each run
with its own criterion folder, and prints a Markdown table: per benchmark the mean of each
side's medians and the ratio after/before.

Usage:
    cargo bench -p cpc-rules-bench --no-run        # prints each bench binary's path; copy the
                                                   # `decisions` one of each build aside
    python3 benches/compare.py BEFORE_BIN AFTER_BIN [REGEX] [ROUNDS] [MEASURE_SECS]

REGEX is criterion's filter (default `^(decide|complaint_policy)/`), ROUNDS the number of B A A B
groups (default 1), MEASURE_SECS criterion's measurement time per benchmark (default 1.5).
"""

import os
import subprocess
import sys
import tempfile


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from criterion_summary import fmt, results  # noqa: E402  (one reader of criterion's files)


def medians(home):
    return {full_id: est["median"]["point_estimate"] for full_id, _bench, est in results(home)}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    before, after = sys.argv[1], sys.argv[2]
    regex = sys.argv[3] if len(sys.argv) > 3 else "^(decide|complaint_policy)/"
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    secs = sys.argv[5] if len(sys.argv) > 5 else "1.5"
    work = tempfile.mkdtemp(prefix="cpc-compare-")
    runs = {"before": [], "after": []}
    order = []
    for _ in range(rounds):
        order += ["before", "after", "after", "before"]
    for i, side in enumerate(order):
        home = os.path.join(work, f"{i}-{side}")
        binary = before if side == "before" else after
        load = open("/proc/loadavg").read().split()[:3]
        print(f"run {i + 1}/{len(order)}: {side} (load average {' '.join(load)})", file=sys.stderr, flush=True)
        env = dict(os.environ, CRITERION_HOME=home)
        subprocess.run(
            [binary, "--bench", "--noplot", "--warm-up-time", "0.5", "--measurement-time", secs, regex],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )
        runs[side].append(medians(home))
    ids = sorted(set().union(*runs["before"]) & set().union(*runs["after"]))
    print("| benchmark | before | after | after/before |")
    print("|---|---:|---:|---:|")
    for b in ids:
        bv = [r[b] for r in runs["before"] if b in r]
        av = [r[b] for r in runs["after"] if b in r]
        mb, ma = sum(bv) / len(bv), sum(av) / len(av)
        print(f"| `{b}` | {fmt(mb)} | {fmt(ma)} | {ma / mb:.2f} |")


if __name__ == "__main__":
    main()
