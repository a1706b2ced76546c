"""Mean ± std over seeds of comparison tables from several runs (one per seed).

    .venv/bin/python benchmarks/seed_table.py SEED=PATH [SEED=PATH ...] [--out PREFIX]
        [--columns test_acc,max_attack_acc,finetune_seconds]

Each PATH is a ``defense_comparison.csv`` (a file, or its versioned folder: the latest version
is read). Writes ``PREFIX.csv`` (``wemem.ml.aggregate.aggregate_seeds``: mean, std, 95% t
interval per metric) and ``PREFIX.md`` (mean ± std cells) and prints the Markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from wemem.ml.aggregate import aggregate_seeds, mean_std_markdown


def _latest(path: Path) -> Path:
    if path.is_file():
        return path
    files = sorted(path.glob("*/" + path.name))
    if not files:
        raise SystemExit(f"{path}: no versions of {path.name} inside; pass the CSV file or its versioned folder")
    return files[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="SEED=PATH of one run's defense_comparison.csv")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--columns", default="test_acc,max_attack_acc,finetune_seconds")
    args = ap.parse_args()
    frames = []
    for item in args.runs:
        seed, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"{item!r}: write SEED=PATH")
        frame = pd.read_csv(_latest(Path(path)))
        frame["seed"] = int(seed)
        frames.append(frame)
    agg = aggregate_seeds(pd.concat(frames, ignore_index=True))
    columns = {c: c for c in args.columns.split(",")}
    md = mean_std_markdown(agg, columns, keys=("pruning_method", "defense"))
    print(md)
    if args.out:
        agg.to_csv(args.out.with_suffix(".csv"), index=False)
        args.out.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    main()
