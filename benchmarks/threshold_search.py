"""Benchmark: the sorting threshold search against the quadratic reference scan (SPEC §8).

Both run in this one process on the same seeded data: 50,000 member and 50,000 non-member
values (members ~ N(0.3, 1), non-members ~ N(0, 1), continuous, so every value is a distinct
candidate: the worst case for the scan). The vectorised quadratic scan
(``benchmarks/reference/threshold_scan.py``: every candidate against every value, in chunks of
candidates) runs
at FULL size, so its time is measured, not extrapolated. The sorting search is timed as the
median of several repeats, the vectorised scan once. For context, the reference code's style
(a Python loop over candidates, each compared with all values) is timed on the first
``--loop-candidates`` candidates and extrapolated linearly to all of them; that figure is
labelled as extrapolated. Writes benchmarks/results/threshold_search.json and prints a summary.

    python benchmarks/threshold_search.py [--n 50000] [--seed 0] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: benchmarks.reference
from benchmarks.reference.threshold_scan import brute_force_threshold  # noqa: E402
from wemem.ml.attacks import best_threshold  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "threshold_search.json"


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="members and non-members each")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="repeats of the sorting search")
    ap.add_argument("--chunk-size", type=int, default=256, help="candidates per quadratic chunk")
    ap.add_argument("--loop-candidates", type=int, default=2000,
                    help="candidates timed for the extrapolated Python-loop figure")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    members = rng.normal(0.3, 1.0, args.n)
    nonmembers = rng.normal(0.0, 1.0, args.n)
    candidates = np.append(np.unique(np.concatenate([members, nonmembers])), np.inf)
    n_candidates = int(candidates.size)

    sort_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        t_sort, ba_sort = best_threshold(members, nonmembers)
        sort_times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    t_brute, ba_brute = brute_force_threshold(members, nonmembers, chunk_size=args.chunk_size)
    brute_time = time.perf_counter() - t0

    # reference-style Python loop, on a prefix of the candidates, extrapolated
    n_loop = min(args.loop_candidates, n_candidates)
    t0 = time.perf_counter()
    for t in candidates[:n_loop]:
        0.5 * (np.count_nonzero(members >= t) / args.n + np.count_nonzero(nonmembers < t) / args.n)
    loop_extrapolated = (time.perf_counter() - t0) * n_candidates / n_loop

    sort_s = statistics.median(sort_times)
    result = {
        "n_members": args.n,
        "n_nonmembers": args.n,
        "n_candidate_thresholds": n_candidates,
        "seed": args.seed,
        "quadratic_mode": f"full size, vectorised over chunks of {args.chunk_size} candidates "
                          "(no subsample, no extrapolation)",
        "sorting_seconds": sort_s,
        "sorting_seconds_all_repeats": sort_times,
        "quadratic_seconds": brute_time,
        "speedup": brute_time / sort_s,
        "python_loop_seconds_extrapolated": loop_extrapolated,
        "python_loop_timed_candidates": n_loop,
        "python_loop_speedup_extrapolated": loop_extrapolated / sort_s,
        "sorting_threshold": t_sort,
        "quadratic_threshold": t_brute,
        "sorting_balanced_acc": ba_sort,
        "quadratic_balanced_acc": ba_brute,
        "same_balanced_acc": ba_sort == ba_brute,
        "same_threshold": t_sort == t_brute,
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"threshold search on {args.n:,} members + {args.n:,} non-members "
          f"({n_candidates:,} candidate thresholds)")
    print(f"  sorting   O(n log n): {sort_s * 1e3:9.1f} ms  (median of {args.repeats})")
    print(f"  quadratic O(n^2)    : {brute_time * 1e3:9.1f} ms  ({result['quadratic_mode']})")
    print(f"  speed-up            : {result['speedup']:9.0f}x")
    print(f"  Python loop (ref.)  : {loop_extrapolated * 1e3:9.1f} ms  EXTRAPOLATED from "
          f"{n_loop:,} of {n_candidates:,} candidates ({result['python_loop_speedup_extrapolated']:.0f}x)")
    print(f"  agreement           : balanced acc {ba_sort:.6f} vs {ba_brute:.6f} "
          f"(same: {result['same_balanced_acc']}), threshold {t_sort} vs {t_brute} "
          f"(same: {result['same_threshold']})")
    print(f"  written to {args.out}")
    if not result["same_balanced_acc"]:
        raise SystemExit("disagreement between the sorting search and the quadratic scan")
    return result


if __name__ == "__main__":
    main()
