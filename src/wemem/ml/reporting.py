"""Tables and plots of a run: score distributions, the defense comparison, ROC curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # figures without pyplot: no backend, no global state

from .attacks import ATTACKS, strongest_attack
from .ranking import risk_threshold

__all__ = [
    "plot_score_distribution",
    "comparison_row",
    "comparison_table",
    "comparison_markdown",
    "time_cost_table",
    "plot_privacy_utility",
    "plot_roc_curves",
    "roc_curves_by_combination",
]


def plot_score_distribution(
    table: pd.DataFrame, title: str = "memorisation scores", tau: float | None = None, tau_mode: str = "value"
) -> Figure:
    """Histogram of the normalised scores overall and a box per class; with ``tau``, the risk
    threshold it amounts to is drawn on both panels with the share it flags, overall and per class."""
    fig = Figure(figsize=(12, 4.4))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
    score = table["score"].to_numpy()
    flagged = None
    if tau is not None:
        flagged, threshold = risk_threshold(score, tau, tau_mode)
    ax1.hist(score, bins=40, color="#3b6ea5")
    ax1.set_xlabel("normalised mem-score")
    ax1.set_ylabel("samples")
    ax1.set_title("overall")
    classes = sorted(table["label"].unique())
    labels = table["label"].to_numpy()
    ax2.boxplot([score[labels == c] for c in classes], showfliers=False)
    ticks = [str(c) for c in classes]
    if flagged is not None:
        what = f"τ = {tau:g}" if tau_mode == "value" else f"top τ = {100 * tau:g}%: score ≥ {threshold:.3f}"
        text = f"{what}\nflags {100 * flagged.mean():.1f}% ({int(flagged.sum())} of {flagged.size})"
        if np.isfinite(threshold):
            ax1.axvline(threshold, color="#c0392b", linestyle="--", linewidth=1.5)
            ax2.axhline(threshold, color="#c0392b", linestyle="--", linewidth=1.2)
        ax1.text(0.98, 0.97, text, transform=ax1.transAxes, ha="right", va="top", fontsize=9, color="#c0392b",
                 bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        ticks = [f"{c}\n{100 * flagged[labels == c].mean():.0f}%" for c in classes]
        ax2.set_xlabel("class (share flagged as risky)")
    else:
        ax2.set_xlabel("class")
    ax2.set_xticks(range(1, len(classes) + 1), ticks, fontsize=7)
    ax2.set_ylabel("normalised mem-score")
    ax2.set_title("per class")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def comparison_row(result: dict[str, Any]) -> dict[str, Any]:
    """One row of the comparison table from one combination's attack results."""
    row = {
        "dataset": result["dataset"],
        "model": result["model"],
        "pruning_method": result.get("method") or "none",
        "sparsity": result.get("sparsity") if result.get("sparsity") is not None else 0.0,
        "defense": result["variant"],
        "status": result.get("status", "ok"),
        "test_acc": result.get("test_acc", np.nan),
        "train_acc": result.get("train_acc", np.nan),
    }
    metrics = result.get("attacks", {})
    for name, m in metrics.items():
        row[f"{name}_acc"] = m["balanced_acc"]
        row[f"{name}_auc"] = m["auc"]
        row[f"{name}_tpr_at_1fpr"] = m["tpr_at_1fpr"]
        row[f"{name}_tpr_at_0.1fpr"] = m["tpr_at_0.1fpr"]
    strongest, row["max_attack_acc"] = strongest_attack(metrics)
    row["strongest_attack"] = strongest
    metric_accs = [metrics[a]["balanced_acc"] for a, e in ATTACKS.items() if e.family == "metric" and a in metrics]
    row["max_metric_attack_acc"] = max(metric_accs) if metric_accs else np.nan
    row["finetune_seconds"] = result.get("finetune_seconds", np.nan)
    row["final_sparsity"] = result.get("final_sparsity", np.nan)
    row["epsilon"] = result.get("epsilon", np.nan)
    for key in ("risky_fraction", "n_risky", "tau_threshold"):  # what τ selected (rmr, swmr)
        row[key] = result.get(key, np.nan)
    row["settings"] = result.get("settings_text", "")
    if result.get("error"):
        row["error"] = result["error"]
    return row


def comparison_table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per (dataset, model, pruning method, sparsity, defense), reference rows first."""
    rows = [comparison_row(r) for r in results]
    table = pd.DataFrame(rows)
    order = {"unpruned": 0, "one_shot": 1}
    table["_o"] = table["defense"].map(lambda d: order.get(d, 2))
    table = table.sort_values(["dataset", "model", "_o", "pruning_method", "sparsity"], kind="stable")
    return table.drop(columns="_o").reset_index(drop=True)


def comparison_markdown(table: pd.DataFrame, attacks: Sequence[str]) -> str:
    """The table laid out like the paper's: test accuracy, then each attack's accuracy (%)."""
    head = ["Data & Model", "Pruning", "Defense", "Test Acc (%)"] + [ATTACKS.label(a) for a in attacks] + ["Max", "FT time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pct(v: Any) -> str:
        return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * float(v):.2f}"

    for _, r in table.iterrows():
        pruning = "—" if r["pruning_method"] == "none" else f"{r['pruning_method']} @ {float(r['sparsity']):.0%}"
        defense = r["defense"] if r.get("status", "ok") == "ok" else f"{r['defense']} (FAILED)"
        cells = [f"{r['dataset']} {r['model']}", pruning, defense, pct(r["test_acc"])]
        cells += [pct(r.get(f"{a}_acc")) for a in attacks]
        ft = r.get("finetune_seconds")
        cells += [pct(r["max_attack_acc"]), "—" if ft is None or np.isnan(ft) else f"{ft:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("\nAttack accuracy is balanced accuracy ½(TPR+TNR) on the victim's members vs non-members; "
            "all attacks are adaptive (calibrated on shadows pruned and defended like the victim).\n")
    return "\n".join(lines) + "\n" + note


def time_cost_table(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's time-cost table: victim fine-tuning seconds per defense (pruned rows)."""
    pruned = table[table["pruning_method"] != "none"]
    return pruned.pivot_table(
        index=["dataset", "model", "pruning_method", "sparsity"], columns="defense",
        values="finetune_seconds", aggfunc="first",
    ).reset_index()


def plot_privacy_utility(table: pd.DataFrame) -> Figure:
    """Test accuracy against the strongest attack's accuracy, one point per defense."""
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    ok = table[table["status"] == "ok"]
    for (method, sparsity), group in ok.groupby(["pruning_method", "sparsity"], sort=False):
        label = "unpruned" if method == "none" else f"{method} @ {sparsity:.0%}"
        ax.scatter(group["max_attack_acc"], group["test_acc"], label=label, s=40)
        for _, r in group.iterrows():
            ax.annotate(r["defense"], (r["max_attack_acc"], r["test_acc"]), fontsize=8,
                        xytext=(4, 3), textcoords="offset points")
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("strongest attack accuracy (balanced) — lower is more private")
    ax.set_ylabel("victim test accuracy — higher is more useful")
    datasets = ", ".join(sorted(ok["dataset"].unique()))
    ax.set_title(f"privacy–utility trade-off ({datasets})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def roc_curves_by_combination(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ROC curves of every evaluated combination, by a label naming its defense (and its
    pruning: ``variant (method @ sparsity)``), for :func:`plot_roc_curves`."""
    return {
        (r["variant"] if r.get("method") is None else f"{r['variant']} ({r['method']} @ {r['sparsity']:.0%})"): r["roc"]
        for r in results if r.get("status") == "ok" and r.get("roc")
    }


def plot_roc_curves(curves: dict[str, dict[str, dict[str, Sequence[float]]]]) -> Figure:
    """Victim ROC curves on log-log axes: one panel per defense, one line per attack.

    Args:
        curves: ``{defense label: {attack: {"fpr": [...], "tpr": [...]}}}``.
    """
    n = max(len(curves), 1)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(4 * cols, 3.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (label, attacks) in zip(axes.flat, curves.items()):
        for attack, pts in attacks.items():
            fpr = np.clip(np.asarray(pts["fpr"], dtype=float), 1e-5, 1)
            tpr = np.clip(np.asarray(pts["tpr"], dtype=float), 1e-5, 1)
            ax.plot(fpr, tpr, lw=1, label=ATTACKS.label(attack))
        ax.plot([1e-5, 1], [1e-5, 1], color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(1e-4, 1)
        ax.set_ylim(1e-4, 1)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("FPR")
        ax.set_ylabel("TPR")
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(10, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
