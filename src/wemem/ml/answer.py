"""The run's answer: the best defense within an accuracy budget, from the comparison table.

:func:`answer` is what the HTML report (:mod:`wemem.ml.report_html`) and the parent MLflow run's
description (:func:`parent_summary`) lead with. No Kedro here."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from .aggregate import combination_means
from .attacks import ATTACKS
from .schema import Section, number

__all__ = ["ReportSettings", "answer", "answer_metrics", "parent_summary", "REFERENCES"]

REFERENCES = ("unpruned", "one_shot")
"""Table rows that are references, not defenses: the unpruned model and one-shot pruning."""

GROUP = ["dataset", "model", "pruning_method", "sparsity"]


class ReportSettings(Section):
    """``mia_evaluation.report``: the accuracy budget of the report's answer. A defense qualifies
    when its victim test accuracy is at most ``max_acc_drop`` (a fraction: 0.02 = 2 points) below
    Base's at the same pruning method and sparsity."""

    max_acc_drop: number(float, 0, 1) = 0.02


def _f(v: Any) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v


def _attack_acc(table: pd.DataFrame) -> pd.Series:
    """The chosen attack's victim accuracy; where no attack was chosen, the max over attacks."""
    chosen = table["chosen_acc"] if "chosen_acc" in table else pd.Series(math.nan, index=table.index)
    return chosen.astype(float).where(chosen.notna(), table["max_attack_acc"].astype(float))


def _means(table: pd.DataFrame) -> pd.DataFrame:
    """One row per combination (dataset, model, pruning, defense): the mean over seeds of test
    accuracy and attack accuracy (the chosen attack's, per seed), their standard deviations (NaN
    with one seed) and the number of seeds, from :func:`wemem.ml.aggregate.combination_means`."""
    rows = table.assign(attack_acc=_attack_acc(table), test_acc=table["test_acc"].astype(float))
    means = combination_means(rows)
    columns = GROUP + ["defense", "test_acc", "test_acc_std", "attack_acc", "attack_acc_std", "n_seeds",
                       "chosen_attack", "chosen_auc", "chosen_tpr_at_1fpr", "max_attack_acc", "finetune_seconds",
                       "strongest_attack"]
    for c in columns:
        if c not in means:
            means[c] = "" if c in ("chosen_attack", "strongest_attack") else math.nan
    means["chosen_attack"] = means["chosen_attack"].fillna("")
    return means[columns]


def _entry(r: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("dataset", "model", "pruning_method", "sparsity", "defense", "test_acc", "test_acc_std", "attack_acc",
            "attack_acc_std", "n_seeds", "chosen_attack", "chosen_auc", "chosen_tpr_at_1fpr", "max_attack_acc")
    out = {k: r.get(k) for k in keys}
    for k in ("sparsity", "test_acc", "test_acc_std", "attack_acc", "attack_acc_std", "chosen_auc",
              "chosen_tpr_at_1fpr", "max_attack_acc"):
        out[k] = None if out[k] is None or math.isnan(_f(out[k])) else float(out[k])
    out["n_seeds"] = int(out["n_seeds"] or 0)
    out["chosen_attack"] = out["chosen_attack"] or ""
    return out


def _setting(r: Mapping[str, Any]) -> str:
    return "unpruned" if r["pruning_method"] == "none" else f"{r['pruning_method']} @ {float(r['sparsity']):.0%}"


def answer(table: pd.DataFrame, max_acc_drop: float) -> dict[str, Any]:
    """The best defense within an accuracy budget.

    Per pruning setting (dataset, model, method, sparsity), the baseline is the ``base`` row
    (pruned and fine-tuned without a defense); a defense qualifies when its test accuracy is at
    least the baseline's minus ``max_acc_drop``. Of all qualifying rows (Base included: when no
    defense beats it, the answer is Base), the best is the one with the lowest attack accuracy
    (the chosen attack's; the max over attacks where none was chosen), ties broken by higher test
    accuracy. With several seeds (a ``seed`` column) the means over seeds are compared.

    Returns ``{"question", "max_acc_drop", "best", "baseline", "unpruned", "candidates",
    "over_budget", "acc_drop", "attack_reduction", "text"}``; ``best`` and ``baseline`` are rows
    (dicts with ``defense``, ``pruning_method``, ``sparsity``, ``test_acc``, ``attack_acc``,
    ``chosen_attack``, ...) or None when the table has no Base row.
    """
    means = _means(table)
    question = (f"Which defense lowers membership-inference accuracy the most while losing at most "
                f"{100 * max_acc_drop:g} points of test accuracy against Base?")
    out: dict[str, Any] = {"question": question, "max_acc_drop": float(max_acc_drop), "best": None,
                           "baseline": None, "unpruned": None, "candidates": [], "over_budget": [],
                           "acc_drop": None, "attack_reduction": None}
    unpruned = means[means["defense"] == "unpruned"]
    if len(unpruned):
        out["unpruned"] = _entry(unpruned.iloc[0])
    defenses = means[~means["defense"].isin(REFERENCES)]
    candidates, over, baselines = [], [], {}
    for key, g in defenses.groupby(GROUP, sort=False, dropna=False):
        base = g[g["defense"] == "base"]
        if base.empty or math.isnan(_f(base.iloc[0]["test_acc"])):
            continue
        floor = float(base.iloc[0]["test_acc"]) - max_acc_drop
        baselines[key] = base.iloc[0]
        for _, r in g.iterrows():
            if math.isnan(_f(r["attack_acc"])) or math.isnan(_f(r["test_acc"])):
                continue
            (candidates if r["test_acc"] >= floor - 1e-12 else over).append(r)
    out["candidates"] = [_entry(r) for r in candidates]
    out["over_budget"] = [_entry(r) for r in over]
    if not candidates:
        out["text"] = ("No answer: the table has no Base row to measure the accuracy budget against "
                       "(or no combination succeeded).")
        return out
    best = min(candidates, key=lambda r: (float(r["attack_acc"]), -float(r["test_acc"])))
    base = baselines[tuple(best[k] for k in GROUP)]
    out["best"], out["baseline"] = _entry(best), _entry(base)
    out["acc_drop"] = float(base["test_acc"] - best["test_acc"])
    out["attack_reduction"] = float(base["attack_acc"] - best["attack_acc"])
    attack = ATTACKS.label(best["chosen_attack"]) if best["chosen_attack"] in ATTACKS else "the strongest attack"
    seeds = f" (mean of {int(best['n_seeds'])} seeds)" if best["n_seeds"] > 1 else ""
    if best["defense"] == "base":
        out["text"] = (f"No defense beats Base within a {100 * max_acc_drop:g}-point accuracy budget "
                       f"({_setting(best)}): {attack} reaches {100 * best['attack_acc']:.1f}% at "
                       f"{100 * best['test_acc']:.1f}% test accuracy{seeds}.")
    else:
        out["text"] = (f"{best['defense'].upper()} ({_setting(best)}) is the best defense within a "
                       f"{100 * max_acc_drop:g}-point accuracy budget: {attack} accuracy "
                       f"{100 * best['attack_acc']:.1f}% (Base {100 * base['attack_acc']:.1f}%) at "
                       f"{100 * best['test_acc']:.1f}% test accuracy (Base {100 * base['test_acc']:.1f}%){seeds}.")
    return out


def answer_metrics(ans: Mapping[str, Any]) -> dict[str, float]:
    """The answer's numbers as flat metrics (for the parent MLflow run): the best defense's and
    Base's attack and test accuracy, the unpruned model's, and the budget."""
    out: dict[str, float] = {"max_acc_drop": float(ans["max_acc_drop"])}
    for who, key in (("best", "best"), ("base", "baseline"), ("unpruned", "unpruned")):
        r = ans.get(key)
        if not r:
            continue
        for metric in ("attack_acc", "test_acc"):
            if r.get(metric) is not None:
                out[f"{who}_{'chosen_attack_acc' if metric == 'attack_acc' else metric}"] = float(r[metric])
    return out


def parent_summary(table: pd.DataFrame, max_acc_drop: float,
                   run_name: str | None = None) -> tuple[dict[str, str], dict[str, float]]:
    """Tags and metrics of the run's parent in MLflow: its description ``mlflow.note.content``
    (Markdown: the answer, the question, where the details are), ``wemem.best_defense``, and
    :func:`answer_metrics`. With the parent's ``run_name`` (``mnist1d · __default__ · <time>``),
    also a new name that carries the answer after the dataset (``mnist1d · best: rsw · ...``),
    so the runs list shows it before the name is cut."""
    ans = answer(table, max_acc_drop)
    note = [f"**{ans['text']}**", "", ans["question"], "",
            "Full report: this run's artifact `report_html.html`. Expand this run for one child run per "
            "defense (named `defense · pruning`; references `unpruned`, `one_shot`)."]
    tags = {"mlflow.note.content": "\n".join(note)}
    if ans.get("best"):
        tags["wemem.best_defense"] = str(ans["best"]["defense"])
        if run_name and " · best: " not in run_name:
            head, _, rest = run_name.partition(" · ")
            tags["mlflow.runName"] = " · ".join(p for p in (head, f"best: {ans['best']['defense']}", rest) if p)
    return tags, answer_metrics(ans)
