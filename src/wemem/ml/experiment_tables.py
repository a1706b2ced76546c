"""The paper's experiments as tables: the comparison table (one row per combination, or per
combination and seed) pivoted into the layout of one of the paper's results, every cell the
mean ± std over seeds (just the mean with one seed).

Layouts (:data:`LAYOUTS`, chosen by ``mia_evaluation.experiment_table``):

- ``rmr_lambda``: the RMR table, Base then RMR per λ_r: test accuracy and each attack's accuracy
  (the paper's eight: Conf, Entr, Mentr, Hconf, SAMIA, NN, Top3-NN, CI-NN, then any others run).
- ``windows``: RSW and SWMR per ranking order and window width ``w``, one column pair per step
  ``s``: test accuracy and the strongest attack.
- ``defenses``: WeMem (RSW, RMR, SWMR) against Base, PPB, ADV, DP-SGD and RelaxLoss: test
  accuracy, the attack chosen on the shadows and the strongest attack.
- ``time_cost``: victim fine-tuning seconds per defense (the paper's time-cost table) and the
  ratio to Base.
- ``methods_sparsities``: per pruning method and defense, one column pair per sparsity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .aggregate import aggregate_seeds
from .attacks import ATTACKS

__all__ = ["LAYOUTS", "experiment_table", "aggregated"]

PAPER_ATTACKS = ("conf", "entr", "mentr", "hconf", "samia", "nn", "top3_nn", "ci_nn")
"""The attack columns of the paper's RMR table, in its order."""
PAPER_DEFENSES = ("base", "rsw", "rmr", "swmr", "ppb", "adv", "relaxloss", "dpsgd")
"""The defenses of the paper's time-cost table, in its order (DP-SGD is its 'DP')."""


def _settings(text: Any) -> dict[str, str]:
    """``"lambda_r=0.1; w=15"`` → ``{"lambda_r": "0.1", "w": "15"}``."""
    if not isinstance(text, str) or not text:
        return {}
    return dict(part.split("=", 1) for part in text.split("; ") if "=" in part)


def aggregated(table: pd.DataFrame) -> pd.DataFrame:
    """One row per combination: every metric's ``_mean``/``_std`` (over the ``seed`` column, or
    the single row) and the text columns (defense type, settings; the modal chosen attack), from
    :func:`wemem.ml.aggregate.aggregate_seeds`."""
    out = aggregate_seeds(table if "seed" in table else table.assign(seed=0))
    if "defense_type" not in out:
        out["defense_type"] = out["defense"]
    out["defense_type"] = out["defense_type"].fillna(out["defense"])
    return out


def _cell(row: pd.Series, metric: str, scale: float = 100.0, digits: int = 2) -> str:
    mean, std = row.get(f"{metric}_mean", np.nan), row.get(f"{metric}_std", np.nan)
    if mean is None or not np.isfinite(mean):
        return "—"
    text = f"{scale * mean:.{digits}f}"
    return text + (f" ± {scale * std:.{digits}f}" if std is not None and np.isfinite(std) else "")


def _md(head: Sequence[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def _groups(agg: pd.DataFrame):
    pruned = agg[agg["pruning_method"] != "none"]
    for key, rows in pruned.groupby(["dataset", "model", "pruning_method", "sparsity"], sort=False):
        yield f"{key[0]} {key[1]}, {key[2]} @ {float(key[3]):.0%}", rows


def _seeds_note(agg: pd.DataFrame) -> str:
    n = sorted({int(v) for v in agg.get("n_seeds", pd.Series([1])).dropna()})
    if n == [1]:
        return ("One seed: no spread (set repeats.seeds for mean and std); accuracies in %. Attack accuracy: "
                "balanced accuracy on the victim's members vs non-members.")
    return (f"Mean ± std over {', '.join(map(str, n))} seed(s) (std: sample, ddof 1); accuracies in %. "
            "Attack accuracy: balanced accuracy on the victim's members vs non-members.")


def rmr_lambda(agg: pd.DataFrame, attacks: Sequence[str]) -> list[str]:
    cols = [a for a in PAPER_ATTACKS if a in attacks] + [a for a in attacks if a not in PAPER_ATTACKS]
    lines = []
    for title, rows in _groups(agg):
        rmr = rows[rows["defense_type"] == "rmr"].copy()
        rmr["_l"] = [float(_settings(s).get("lambda_r", "nan")) for s in rmr["settings"]]
        ordered = [("Base", r) for _, r in rows[rows["defense"] == "base"].iterrows()]
        ordered += [(f"{r['_l']:g}", r) for _, r in rmr.sort_values("_l").iterrows()]
        table = [[label, _cell(r, "test_acc"), *(_cell(r, f"{a}_acc") for a in cols)] for label, r in ordered]
        lines += [f"### {title}", "", *_md(["λ_r", "Test Acc (%)", *(ATTACKS.label(a) for a in cols)], table), ""]
    return lines


def windows(agg: pd.DataFrame, attacks: Sequence[str]) -> list[str]:
    lines = []
    for title, rows in _groups(agg):
        win = rows[rows["defense_type"].isin(["rsw", "swmr"])].copy()
        parsed = [_settings(s) for s in win["settings"]]
        win["_w"] = [int(p.get("w", 0)) for p in parsed]
        win["_s"] = [int(p.get("s", 0)) for p in parsed]
        win["_o"] = [p.get("order", "") for p in parsed]
        steps = sorted(win["_s"].unique())
        head = ["Defense", "Order", "w", *(f"{h} (s={s})" for s in steps for h in ("Test Acc (%)", "Strongest (%)"))]
        table = []
        for (d, o, w), g in win.groupby(["defense_type", "_o", "_w"], sort=True):
            by_s = {int(r["_s"]): r for _, r in g.iterrows()}
            cells = []
            for s in steps:
                r = by_s.get(s)
                cells += ["—", "—"] if r is None else [_cell(r, "test_acc"), _cell(r, "max_attack_acc")]
            table.append([d.upper(), {"h2l": "H→L", "l2h": "L→H"}.get(o, o), str(w), *cells])
        for _, r in rows[rows["defense"] == "base"].iterrows():
            table.insert(0, ["Base", "—", "—", *([_cell(r, "test_acc"), _cell(r, "max_attack_acc")] * len(steps))])
        lines += [f"### {title}", "", *_md(head, table), ""]
    return lines


def _order(rows: pd.DataFrame) -> list[pd.Series]:
    rank = {d: i for i, d in enumerate(PAPER_DEFENSES)}
    return [r for _, r in sorted(rows.iterrows(), key=lambda ir: (rank.get(ir[1]["defense_type"], 99),
                                                                  str(ir[1]["defense"])))]


def defenses(agg: pd.DataFrame, attacks: Sequence[str]) -> list[str]:
    lines = []
    for title, rows in _groups(agg):
        first = rows.iloc[0]
        unpruned = agg[(agg["pruning_method"] == "none") & (agg["dataset"] == first["dataset"])
                       & (agg["model"] == first["model"])]
        table = [[str(r["defense"]), "— (unpruned)" if r["pruning_method"] == "none" else _label(r["defense_type"]),
                  _cell(r, "test_acc"), ATTACKS.label(r["chosen_attack"]) if r.get("chosen_attack") in ATTACKS else "—",
                  _cell(r, "chosen_acc"), _cell(r, "max_attack_acc")]
                 for r in [*(r for _, r in unpruned.iterrows()), *_order(rows)]]
        head = ["Variant", "Defense", "Test Acc (%)", "Chosen attack", "Chosen attack acc (%)", "Strongest (%)"]
        lines += [f"### {title}", "", *_md(head, table), ""]
    return lines


def _label(defense: str) -> str:
    from .defenses import DEFENSES

    return DEFENSES.label(defense) if defense in DEFENSES else str(defense)


def time_cost(agg: pd.DataFrame, attacks: Sequence[str]) -> list[str]:
    lines = []
    for title, rows in _groups(agg):
        ordered = _order(rows)
        base = next((r for r in ordered if r["defense"] == "base"), None)
        ref = base.get("finetune_seconds_mean") if base is not None else np.nan
        head = ["Data & Model", *(_label(r["defense_type"]) if r["defense"] == r["defense_type"] else str(r["defense"])
                                  for r in ordered)]
        secs = [_cell(r, "finetune_seconds", 1.0, 1) + " s" for r in ordered]
        ratio = ["—" if not np.isfinite(ref or np.nan) else f"{r['finetune_seconds_mean'] / ref:.2f}×"
                 for r in ordered]
        lines += [f"### {title}", "", *_md(head, [["seconds", *secs], ["÷ Base", *ratio]]), ""]
    return lines


def methods_sparsities(agg: pd.DataFrame, attacks: Sequence[str]) -> list[str]:
    pruned = agg[agg["pruning_method"] != "none"]
    sparsities = sorted(pruned["sparsity"].unique())
    head = ["Data & Model", "Pruning", "Defense",
            *(f"{h} ({float(s):.0%})" for s in sparsities for h in ("Test Acc (%)", "Strongest (%)"))]
    table = []
    for (data, model, method), rows in pruned.groupby(["dataset", "model", "pruning_method"], sort=False):
        for variant, g in sorted(rows.groupby("defense", sort=False),
                                 key=lambda kv: (PAPER_DEFENSES.index(kv[1]["defense_type"].iloc[0])
                                                 if kv[1]["defense_type"].iloc[0] in PAPER_DEFENSES else 99, kv[0])):
            by_s = {float(r["sparsity"]): r for _, r in g.iterrows()}
            cells = []
            for s in sparsities:
                r = by_s.get(float(s))
                cells += ["—", "—"] if r is None else [_cell(r, "test_acc"), _cell(r, "max_attack_acc")]
            table.append([f"{data} {model}", method, str(variant), *cells])
    return _md(head, table) + [""]


LAYOUTS: dict[str, Callable[[pd.DataFrame, Sequence[str]], list[str]]] = {
    "rmr_lambda": rmr_lambda, "windows": windows, "defenses": defenses, "time_cost": time_cost,
    "methods_sparsities": methods_sparsities,
}

TITLES = {
    "rmr_lambda": "RMR with λ_g = 0.0005 and λ_r ∈ {0.01, 0.1, 1}: test and attack accuracy",
    "windows": "Window width × step × ranking order for RSW and SWMR: test accuracy and strongest attack",
    "defenses": "WeMem (RSW, RMR, SWMR) against the five existing defenses",
    "time_cost": "Time cost of the victim's iterative fine-tuning per defense",
    "methods_sparsities": "Pruning methods × sparsities: test accuracy and strongest attack",
}


def experiment_table(table: pd.DataFrame, layout: str | None, attacks: Sequence[str]) -> str:
    """The comparison table (per-seed rows or not) in the paper's ``layout`` (Markdown); a
    one-line note when ``layout`` is None."""
    if layout is None:
        return ("No experiment layout chosen (mia_evaluation.experiment_table: one of "
                f"{', '.join(LAYOUTS)}); the full table is defense_comparison.md.\n")
    ok = table[table["status"].eq("ok")] if "status" in table else table
    agg = aggregated(ok)
    lines = [f"# {TITLES[layout]}", "", _seeds_note(agg), "", *LAYOUTS[layout](agg, attacks)]
    if layout in ("windows", "methods_sparsities"):
        lines.append("Strongest: the best attack on the victim by balanced accuracy, picked with the victim's "
                     "labels (an upper bound).")
    return "\n".join(lines) + "\n"
