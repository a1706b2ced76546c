"""Repeats: per-seed comparison rows aggregated into mean, standard deviation and a 95%
confidence interval per combination.

A defense's effect is a claim only with its spread: on real Location two seeds of the same
configuration gave strongest attacks 9 points apart. The interval is Student's t interval of the
mean over seeds (``mean ± t_{0.975, n−1} · std / √n``, sample std with ``ddof = 1``); with one
seed std and the interval are NaN, never zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["KEYS", "TEXT", "DELTA_METRICS", "aggregate_seeds", "combination_means", "comparison_aggregate", "paired_deltas", "mean_std_markdown", "interval_markdown",
           "comparison_agg_markdown"]

KEYS = ["dataset", "model", "pruning_method", "sparsity", "defense"]
"""The columns that name a combination; every other numeric column is a metric."""
TEXT = ("defense_type", "settings", "chosen_attack", "strongest_attack")
"""Text columns carried into the aggregate: the most frequent value over the combination's
successful seeds (ties: the first seen), e.g. the attack chosen on the shadows most often."""


def _modal(values: pd.Series) -> Any:
    values = values.dropna()
    if values.empty:
        return None
    counts = Counter(values.tolist())
    top = max(counts.values())
    return next(v for v in values.tolist() if counts[v] == top)


def aggregate_seeds(rows: pd.DataFrame, keys: Sequence[str] = KEYS, seed_column: str = "seed",
                    text: Sequence[str] = TEXT) -> pd.DataFrame:
    """One row per combination with ``<metric>_mean``, ``_std``, ``_ci_low``, ``_ci_high`` and
    ``n_seeds`` (failed rows, status ≠ ok, are left out of the statistics and counted in
    ``n_failed``), and the text columns ``text`` present in ``rows`` (their modal value over the
    successful seeds). This is the project's one mean over seeds: the aggregated table, the
    report's answer, the select step, the experiment layouts and the privacy–utility plot all
    read it.

    Args:
        rows: one row per (combination, seed), e.g. the comparison tables of several runs
            concatenated with a ``seed`` column.
        keys: the columns naming a combination (kept in first-seen order).
        seed_column: the column holding the seed.
        text: text columns to carry (those missing from ``rows`` are skipped).
    """
    missing = [k for k in [*keys, seed_column] if k not in rows.columns]
    if missing:
        raise ValueError(f"aggregate_seeds: the per-seed rows lack column(s) {missing}; "
                         f"each row needs {list(keys)} and {seed_column!r}")
    ok = rows["status"].eq("ok") if "status" in rows.columns else pd.Series(True, index=rows.index)
    metrics = [c for c in rows.columns
               if c not in (*keys, seed_column) and pd.api.types.is_numeric_dtype(rows[c]) and rows[c].dtype != bool]
    texts = [c for c in text if c in rows.columns and c not in keys]
    out = []
    groups = rows.groupby(list(keys), sort=False, dropna=False)
    for key, group in groups:
        good = group[ok.loc[group.index]]
        record = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        record["n_seeds"] = int(good[seed_column].nunique(dropna=False))  # NaN: a run without repeats
        record["n_failed"] = int(len(group) - len(good))
        record["seeds"] = " ".join(str(s) for s in sorted(good[seed_column].dropna().unique()))
        for col in texts:
            record[col] = _modal(good[col] if len(good) else group[col])
        for col in metrics:
            values = good[col].to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)]
            n = values.size
            mean = float(values.mean()) if n else float("nan")
            std = float(values.std(ddof=1)) if n > 1 else float("nan")
            half = float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else float("nan")
            record.update({f"{col}_mean": mean, f"{col}_std": std,
                           f"{col}_ci_low": mean - half, f"{col}_ci_high": mean + half})
        out.append(record)
    return pd.DataFrame(out)


def combination_means(table: pd.DataFrame, keys: Sequence[str] = KEYS) -> pd.DataFrame:
    """:func:`aggregate_seeds` of a comparison table as plain columns, for the readers that want
    one value per metric: ``<metric>`` is the mean over the successful seeds and ``<metric>_std``
    its sample std (NaN with one seed); combinations with no successful seed are left out. A
    table without a ``seed`` column is one run (each combination one seed)."""
    rows = table if "seed" in table else table.assign(seed=0)
    agg = aggregate_seeds(rows, keys)
    agg = agg[agg["n_seeds"] > 0].reset_index(drop=True)
    metrics = [c[:-5] for c in agg.columns if c.endswith("_mean")]
    plain = agg[[c for c in agg.columns if not c.endswith(("_mean", "_std", "_ci_low", "_ci_high"))]]
    values = {}
    for m in metrics:
        values[m] = agg[f"{m}_mean"]
        values[f"{m}_std"] = agg[f"{m}_std"]
    return pd.concat([plain, pd.DataFrame(values, index=agg.index)], axis=1)


DELTA_METRICS = ("test_acc", "chosen_acc", "max_attack_acc")
"""The metrics :func:`paired_deltas` compares with the reference by default."""


def paired_deltas(rows: pd.DataFrame, reference: str = "base", metrics: Sequence[str] = DELTA_METRICS,
                  keys: Sequence[str] = KEYS, seed_column: str = "seed") -> pd.DataFrame:
    """Each combination's difference to ``reference`` at the same dataset, model, pruning method,
    sparsity **and seed**, aggregated over the seeds: ``delta_<metric>_mean``, ``_std``,
    ``_ci_low``, ``_ci_high`` and ``n_pairs``, one row per combination that has a reference
    (the reference's own row is left out).

    The seed fixes the splits, the victim and the shadows, so most of the seed-to-seed spread is
    shared by a defense and its Base; the paired difference removes it (on real Location, RMR's
    attack reduction was 7.6 ± 0.5 points paired against 2-4 points of std on either side).
    Failed rows and metrics missing on either side are left out."""
    group = [k for k in keys if k != "defense"]
    ok = rows[rows["status"].eq("ok")] if "status" in rows.columns else rows
    metrics = [m for m in metrics if m in ok.columns]
    ref = ok[ok["defense"] == reference][[*group, seed_column, *metrics]]
    other = ok[ok["defense"] != reference]
    pairs = other.merge(ref, on=[*group, seed_column], suffixes=("", "__ref"))
    if pairs.empty:  # no reference, nothing else, or nothing sharing a pruning setting with it (e.g. it failed)
        return pd.DataFrame(columns=[*keys, "n_pairs"])
    pairs[seed_column] = pairs[seed_column].fillna(-1)  # a run without repeats: one pair per row
    diffs = pairs[[*keys, seed_column]].assign(**{
        f"delta_{m}": pairs[m].astype(float) - pairs[f"{m}__ref"].astype(float) for m in metrics})
    agg = aggregate_seeds(diffs, keys, seed_column, text=())
    return agg.drop(columns=["n_failed", "seeds"]).rename(columns={"n_seeds": "n_pairs"})


def comparison_aggregate(table: pd.DataFrame, reference: str = "base") -> pd.DataFrame:
    """The reports member ``defense_comparison_agg``: :func:`aggregate_seeds` of the comparison
    table with each combination's :func:`paired_deltas` to ``reference`` beside it."""
    agg = aggregate_seeds(table)
    deltas = paired_deltas(table, reference)
    return agg.merge(deltas, on=KEYS, how="left") if len(deltas) else agg


def _markdown(agg: pd.DataFrame, columns: dict[str, str], keys: Sequence[str], scale: float, digits: int,
              interval: bool) -> str:
    head = [*keys, *columns.values(), "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in agg.iterrows():
        cells = [str(row[k]) for k in keys]
        for col in columns:
            f = 1.0 if "seconds" in col else scale
            mean, std = row.get(f"{col}_mean", np.nan), row.get(f"{col}_std", np.nan)
            lo, hi = row.get(f"{col}_ci_low", np.nan), row.get(f"{col}_ci_high", np.nan)
            if not np.isfinite(mean):
                cells.append("—")
            elif not np.isfinite(std):
                cells.append(f"{f * mean:.{digits}f}")
            else:
                cell = f"{f * mean:.{digits}f} ± {f * std:.{digits}f}"
                cells.append(cell + (f" [{f * lo:.{digits}f}, {f * hi:.{digits}f}]" if interval else ""))
        failed = f" ({row['n_failed']} failed)" if interval and row.get("n_failed") else ""
        cells.append(str(row["n_seeds"]) + failed)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def mean_std_markdown(agg: pd.DataFrame, columns: dict[str, str], keys: Sequence[str] = ("defense",),
                      scale: float = 100.0, digits: int = 2) -> str:
    """A Markdown table of ``mean ± std`` cells: ``columns`` maps a metric to its header;
    values are multiplied by ``scale`` (percent by default), except metrics measured in
    seconds, shown as they are."""
    return _markdown(agg, columns, keys, scale, digits, interval=False)


def interval_markdown(agg: pd.DataFrame, columns: dict[str, str], keys: Sequence[str] = ("defense",),
                      scale: float = 100.0, digits: int = 2) -> str:
    """A Markdown table of ``mean ± std [ci_low, ci_high]`` cells (the 95% interval of the mean;
    with one seed only the mean) and the failed repeats counted: ``columns`` maps a metric to its
    header; values are multiplied by ``scale`` (percent by default) except metrics in seconds."""
    return _markdown(agg, columns, keys, scale, digits, interval=True)


def comparison_agg_markdown(agg: pd.DataFrame, attacks: Sequence[str]) -> str:
    """The aggregated comparison (``aggregate_seeds`` of the per-seed table) in the paper's layout:
    test accuracy, each attack's accuracy, the attack chosen on the shadows (accuracy, AUC), the
    max over attacks and the fine-tuning time, each as mean ± std [95% interval] over the seeds."""
    from .attacks import ATTACKS

    columns = {"test_acc": "Test Acc (%)", **{f"{a}_acc": ATTACKS.label(a) for a in attacks},
               "chosen_acc": "Chosen attack Acc (%)", "chosen_auc": "Chosen attack AUC (%)",
               "max_attack_acc": "Max (upper bound)", "finetune_seconds": "FT time (s)"}
    columns = {k: v for k, v in columns.items() if f"{k}_mean" in agg.columns}
    table = agg.assign(pruning=[("—" if m == "none" else f"{m} @ {float(s):.0%}")
                                for m, s in zip(agg.get("pruning_method", []), agg.get("sparsity", []))])
    keys = [k for k in ("dataset", "model", "pruning", "defense") if k in table.columns]
    note = ("\nEach cell: mean ± sample std over the seeds [95% confidence interval of the mean, Student's t "
            "with n−1 degrees of freedom]; with one seed, the value alone. Failed (combination, seed) rows are "
            "left out and counted. The per-seed rows are defense_comparison.csv (column seed).\n")
    out = interval_markdown(table, columns, keys) + note
    if "n_pairs" in table.columns and (table["n_pairs"].fillna(0) > 1).any():
        paired = table[table["n_pairs"].fillna(0) > 0].assign(n_seeds=lambda t: t["n_pairs"].astype(int),
                                                                n_failed=0)
        deltas = {f"delta_{k}": f"Δ {v}" for k, v in {"test_acc": "Test Acc", "chosen_acc": "Chosen attack Acc",
                                                       "max_attack_acc": "Max attack"}.items()
                  if f"delta_{k}_mean" in paired.columns}
        out += ("\n## Difference to Base, paired by seed (points)\n\n" + interval_markdown(paired, deltas, keys)
                + "\nEach cell: the mean over seeds of (this row − Base at the same pruning and seed) ± its sample std "
                  "[95% t interval]; negative attack accuracy = more private. A seed fixes the splits, victim and "
                  "shadows, so pairing removes the spread a defense shares with its Base.\n")
    return out
