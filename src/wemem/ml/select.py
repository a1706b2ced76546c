"""The select step: the defense setting a model owner should use, chosen without the victim's
membership labels.

For each pruning method × sparsity of the run, among the defense variants (e.g. a sweep's
points) whose *utility* stays within ``max_acc_drop`` of the reference variant's (Base), pick
the one with the weakest attack *on the shadows*: utility is the victim's accuracy on its dev
data (``dev_acc``: the owner's own validation set, never a member) or the shadows' mean test
accuracy; privacy is the leave-one-shadow-out attack accuracy on the shadow models
(``shadow_max_attack``: the strongest attack there; ``shadow_chosen_attack``: the one the
adversary would pick). Only the columns in :data:`DECISION_COLUMNS` reach the choice.

Next to that choice the report puts the victim's numbers (test accuracy and attack accuracy,
measured with the victim's membership labels) and the *oracle*: the variant the same rule
picks with the victim's own test accuracy and attack accuracy. The gap between the two is the
honest measure of the selection. With several seeds, every number is the mean over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .aggregate import combination_means
from .schema import Section, Unit, choice

__all__ = ["SelectSettings", "DECISION_COLUMNS", "GROUP", "select_defenses", "selection_markdown"]

GROUP = ["dataset", "model", "pruning_method", "sparsity"]
"""One selection per group: the combinations that differ only by their defense variant."""

DECISION_COLUMNS = ("dev_acc", "shadow_test_acc", "shadow_max_attack", "shadow_chosen_attack")
"""Every number the choice may read: none comes from the victim's membership labels."""

VICTIM_COLUMNS = ("test_acc", "chosen_acc", "max_attack_acc")


class SelectSettings(Section):
    """``mia_evaluation.select``: the accuracy budget and what the choice is judged on."""

    max_acc_drop: Unit = 0.02  # at most this much utility below the reference variant (0.02 = 2 points)
    reference: str = "base"  # the variant the budget is measured from (same method × sparsity)
    candidates: list[str] | None = None  # variants to choose from (None: every pruned variant of the run)
    utility: choice("utility column", ("dev_acc", "shadow_test_acc")) = "dev_acc"
    privacy: choice("privacy column", ("shadow_max_attack", "shadow_chosen_attack")) = "shadow_max_attack"
    victim_metric: choice("victim metric", ("max_attack_acc", "chosen_acc")) = "max_attack_acc"  # oracle's, gap's


def _pick(rows: pd.DataFrame, utility: str, privacy: str, reference: str, drop: float) -> tuple[str | None, float]:
    """The variant with the lowest ``privacy`` among those whose ``utility`` is at least the
    reference's minus ``drop`` (ties: the higher utility, then the first); (None, ref) if none."""
    ref = rows.loc[rows["defense"] == reference, utility]
    ref_value = float(ref.iloc[0]) if len(ref) else float("nan")
    ok = rows[np.isfinite(rows[privacy].astype(float)) & (rows[utility] >= ref_value - drop - 1e-12)]
    if ok.empty:
        return None, ref_value
    best = ok.sort_values([privacy, utility], ascending=[True, False], kind="stable").iloc[0]
    return str(best["defense"]), ref_value


def _means(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """One row per combination: ``columns``' means over the seeds
    (:func:`wemem.ml.aggregate.combination_means`; NaN where the table lacks a column)."""
    means = combination_means(table)
    for c in columns:
        if c not in means:
            means[c] = np.nan
    return means[[*GROUP, "defense", *columns]]


def select_defenses(table: pd.DataFrame, settings: SelectSettings) -> dict[str, Any]:
    """The selection of every method × sparsity group of a comparison table (per-seed rows or
    not): ``{"settings": ..., "groups": [{group keys, "reference", "chosen", "oracle", "gap",
    "candidates": [...]}]}``. ``chosen`` is decided on :data:`DECISION_COLUMNS` only."""
    pruned = table[table["pruning_method"] != "none"]
    if "one_shot" in pruned.get("defense", pd.Series(dtype=str)).values:
        pruned = pruned[pruned["defense"] != "one_shot"]
    seeds = int(table["seed"].nunique()) if "seed" in table else 1
    decision = _means(pruned, DECISION_COLUMNS)  # what the choice sees
    victim = _means(pruned, VICTIM_COLUMNS)  # what it is judged by
    groups = []
    for key, rows in decision.groupby(GROUP, sort=False, dropna=False):
        allowed = set(settings.candidates or rows["defense"]) | {settings.reference}
        rows = rows[rows["defense"].isin(allowed)].reset_index(drop=True)
        vrows = victim.merge(rows[GROUP + ["defense"]], on=GROUP + ["defense"])
        chosen, ref_u = _pick(rows, settings.utility, settings.privacy, settings.reference, settings.max_acc_drop)
        oracle, ref_t = _pick(vrows, "test_acc", settings.victim_metric, settings.reference, settings.max_acc_drop)
        vby = vrows.set_index("defense")

        def victim_of(variant: str | None) -> dict[str, float] | None:
            return None if variant is None else {c: float(vby.loc[variant, c]) for c in VICTIM_COLUMNS}

        metric = settings.victim_metric
        gap = (victim_of(chosen)[metric] - victim_of(oracle)[metric]) if chosen and oracle else float("nan")
        groups.append({
            **dict(zip(GROUP, key)),
            "n_seeds": seeds,
            "reference": {"variant": settings.reference, settings.utility: ref_u, "test_acc": ref_t},
            "chosen": None if chosen is None else {
                "variant": chosen, **{c: float(rows.set_index("defense").loc[chosen, c]) for c in DECISION_COLUMNS},
                "victim": victim_of(chosen)},
            "oracle": None if oracle is None else {"variant": oracle, "victim": victim_of(oracle)},
            "gap": gap,
            "candidates": [{"variant": r["defense"], **{c: float(r[c]) for c in DECISION_COLUMNS},
                            "victim": victim_of(r["defense"])} for _, r in rows.iterrows()],
        })
    return {"settings": settings.as_dict(), "groups": groups}


def _pct(v: Any) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{100 * float(v):.2f}"


def selection_markdown(selection: dict[str, Any]) -> str:
    """The selection as Markdown: per group the chosen variant and the oracle with the victim's
    numbers, the gap, and every candidate with what the choice saw."""
    s = selection["settings"]
    lines = ["# Defense setting selected without the victim's membership labels", "",
             f"Budget: {s['utility']} at most {100 * s['max_acc_drop']:.1f} points below `{s['reference']}`; "
             f"weakest attack by {s['privacy']} (leave-one-shadow-out, on the shadow models). "
             f"Oracle: the same rule on the victim's test accuracy and {s['victim_metric']} (uses the victim's "
             "membership labels). Gap: chosen − oracle on the victim's "
             f"{s['victim_metric']} (0 = the selection found the oracle's setting).", ""]
    for g in selection["groups"]:
        lines += [f"## {g['dataset']} {g['model']}, {g['pruning_method']} @ {float(g['sparsity']):.0%} "
                  f"({g['n_seeds']} seed(s))", ""]
        head = ["", "variant", "victim test acc (%)", "victim chosen attack (%)", "victim max attack (%)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label, entry in (("**selected**", g["chosen"]), ("oracle", g["oracle"])):
            v = (entry or {}).get("victim") or {}
            lines.append(f"| {label} | {(entry or {}).get('variant', 'none in budget')} | {_pct(v.get('test_acc'))} | "
                         f"{_pct(v.get('chosen_acc'))} | {_pct(v.get('max_attack_acc'))} |")
        lines += ["", f"Gap: {_pct(g['gap'])} points.", "",
                  "| candidate | dev acc (%) | shadows' test acc (%) | shadows' max attack (%) | "
                  "shadows' chosen attack (%) | victim test acc (%) | victim max attack (%) |",
                  "|---|---|---|---|---|---|---|"]
        for c in g["candidates"]:
            v = c["victim"] or {}
            lines.append(f"| {c['variant']} | {_pct(c['dev_acc'])} | {_pct(c['shadow_test_acc'])} | "
                         f"{_pct(c['shadow_max_attack'])} | {_pct(c['shadow_chosen_attack'])} | "
                         f"{_pct(v.get('test_acc'))} | {_pct(v.get('max_attack_acc'))} |")
        lines.append("")
    if not selection["groups"]:
        lines.append("No pruned combination in this run: nothing to select.")
    return "\n".join(lines) + "\n"
