"""Tables and plots of a run: score distributions, the defense comparison, ROC curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # figures without pyplot: no backend, no global state

from .aggregate import combination_means
from .attacks import ATTACKS, strongest_attack
from .figures import (_combination_label, _loglog, _pareto, _place_labels, _roc_legend, chosen_roc_by_combination,
                      plot_chosen_roc)
from .ranking import risk_threshold

__all__ = [
    "plot_score_distribution",
    "comparison_row",
    "comparison_table",
    "comparison_markdown",
    "time_cost_table",
    "plot_privacy_utility",
    "plot_roc_curves",
    "plot_memorisation_slices",
    "roc_curves_by_combination",
    "roc_floors",
    "chosen_roc_by_combination",
    "plot_chosen_roc",
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


ATTACK_COLUMNS = ("balanced_acc", "auc", "tpr_at_1fpr", "tpr_at_0.1fpr", "eps_lb")
SLICE_COLUMNS = ("tpr_high", "tpr_low", "auc_high", "auc_low", "fpr_decision")
_CSV_NAME = {"balanced_acc": "acc"}


def comparison_row(result: dict[str, Any]) -> dict[str, Any]:
    """One row of the comparison table from one combination's attack results: every attack's
    metrics (a TPR that is not measurable at the victim's 1/n_nonmembers resolution stays NaN),
    the attack chosen on the shadows with its victim metrics and memorisation slices
    (``chosen_*``, the headline) and the max over attacks on the victim (``max_attack_acc``: an
    upper bound, chosen with the victim's labels)."""
    row = {
        "dataset": result["dataset"],
        "model": result["model"],
        "pruning_method": result.get("method") or "none",
        "sparsity": result.get("sparsity") if result.get("sparsity") is not None else 0.0,
        "defense": result["variant"],
        "defense_type": result.get("defense", result["variant"]),  # the registered defense of the variant
        "seed": result.get("seed", np.nan),  # the repeat (repeats.seeds; else the top-level seed)
        "status": result.get("status", "ok"),
        "test_acc": result.get("test_acc", np.nan),
        "train_acc": result.get("train_acc", np.nan),
        "n_members": result.get("n_members", np.nan),
        "n_nonmembers": result.get("n_nonmembers", np.nan),
    }
    metrics = result.get("attacks", {})
    for name, m in metrics.items():
        for k in ATTACK_COLUMNS:
            row[f"{name}_{_CSV_NAME.get(k, k)}"] = m.get(k, np.nan)
    chosen = result.get("chosen_attack") or ""
    row["chosen_attack"] = chosen
    for k in ATTACK_COLUMNS + SLICE_COLUMNS:
        row[f"chosen_{_CSV_NAME.get(k, k)}"] = metrics[chosen].get(k, np.nan) if chosen in metrics else np.nan
    row["tau"] = result.get("tau", np.nan)
    row["n_high"] = result.get("n_high", np.nan)
    strongest, row["max_attack_acc"] = strongest_attack(metrics)
    row["strongest_attack"] = strongest
    metric_accs = [metrics[a]["balanced_acc"] for a, e in ATTACKS.items() if e.family == "metric" and a in metrics]
    row["max_metric_attack_acc"] = max(metric_accs) if metric_accs else np.nan
    row["finetune_seconds"] = result.get("finetune_seconds", np.nan)
    row["final_sparsity"] = result.get("final_sparsity", np.nan)
    row["epsilon"] = result.get("epsilon", np.nan)
    for key in ("risky_fraction", "n_risky", "tau_threshold"):  # what τ selected (rmr, swmr)
        row[key] = result.get(key, np.nan)
    row["delta"] = result.get("delta", np.nan)
    for key in ("dev_acc", "shadow_test_acc", "shadow_chosen_attack", "shadow_max_attack"):  # the select step's
        row[key] = result.get(key, np.nan)
    row["settings"] = result.get("settings_text", "")
    if result.get("error"):
        row["error"] = result["error"]
    return row


def comparison_table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per (dataset, model, pruning method, sparsity, defense, seed), reference rows first
    (a combination's seeds stay together, in the order of ``results``)."""
    rows = [comparison_row(r) for r in results]
    table = pd.DataFrame(rows)
    order = {"unpruned": 0, "one_shot": 1}
    table["_o"] = table["defense"].map(lambda d: order.get(d, 2))
    table = table.sort_values(["dataset", "model", "_o", "pruning_method", "sparsity"], kind="stable")
    return table.drop(columns="_o").reset_index(drop=True)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and np.isnan(v))


def _pct(v: Any) -> str:
    return "—" if _missing(v) else f"{100 * float(v):.2f}"


def comparison_markdown(table: pd.DataFrame, attacks: Sequence[str]) -> str:
    """The table laid out like the paper's (test accuracy, then each attack's accuracy, %), then
    the headline: the attack chosen on the shadows with its victim AUC, TPR at 1% and 0.1% FPR
    (marked not measurable below the 1/n_nonmembers resolution), TPR on high/low-memorisation
    members, the empirical ε lower bound next to the accountant's ε; the max over attacks last,
    as an upper bound."""
    head = (["Data & Model", "Pruning", "Defense", "Test Acc (%)"] + [ATTACKS.label(a) for a in attacks]
            + ["Chosen attack", "Acc (%)", "AUC (%)", "TPR@1%FPR (%)", "TPR@0.1%FPR (%)",
               "TPR high/low mem (%)", "ε_lb (accountant ε)", "Max (upper bound)", "FT time (s)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    unmeasured: set[int] = set()

    def tpr(r: Any, key: str, level: float) -> str:
        n_non = r.get("n_nonmembers")
        if _missing(r.get(key)) and not _missing(n_non) and r.get("chosen_attack") and level * float(n_non) < 1:
            unmeasured.add(int(n_non))
            return "n/m¹"
        return _pct(r.get(key))

    for _, r in table.iterrows():
        pruning = "—" if r["pruning_method"] == "none" else f"{r['pruning_method']} @ {float(r['sparsity']):.0%}"
        defense = r["defense"] if r.get("status", "ok") == "ok" else f"{r['defense']} (FAILED)"
        cells = [f"{r['dataset']} {r['model']}", pruning, defense, _pct(r["test_acc"])]
        cells += [_pct(r.get(f"{a}_acc")) for a in attacks]
        chosen = r.get("chosen_attack") or ""
        eps_lb, eps = r.get("chosen_eps_lb"), r.get("epsilon")
        cells += [ATTACKS.label(chosen) if chosen else "—²", _pct(r.get("chosen_acc")), _pct(r.get("chosen_auc")),
                  tpr(r, "chosen_tpr_at_1fpr", 0.01), tpr(r, "chosen_tpr_at_0.1fpr", 0.001),
                  f"{_pct(r.get('chosen_tpr_high'))} / {_pct(r.get('chosen_tpr_low'))}",
                  ("—" if _missing(eps_lb) else f"{float(eps_lb):.2f}") + ("" if _missing(eps) else f" ({float(eps):.2f})")]
        ft = r.get("finetune_seconds")
        strongest = r.get("strongest_attack") or ""
        cells += [_pct(r["max_attack_acc"]) + (f" ({ATTACKS.label(strongest)})" if strongest else ""),
                  "—" if _missing(ft) else f"{ft:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    taus = sorted({float(t) for t in table.get("tau", pd.Series(dtype=float)) if not _missing(t)})
    note = ["", "Attack accuracy is balanced accuracy ½(TPR+TNR) on the victim's members vs non-members; "
            "all attacks are adaptive (calibrated on shadows pruned and defended like the victim).",
            "Chosen attack: the attack an adversary would pick, the best by mean "
            "balanced accuracy over leave-one-shadow-out folds on the shadow models (no victim labels); its "
            "columns are its metrics on the victim. Max: the best attack picked with the victim's labels, an "
            "upper bound biased upwards.",
            "TPR high/low mem: the chosen attack's TPR at its decision threshold on the victim's members "
            f"with memorisation score ≥ τ / < τ (τ = {', '.join(f'{t:g}' for t in taus) or '—'}; "
            f"{', '.join(str(int(n)) for n in sorted(table.get('n_high', pd.Series(dtype=float)).dropna().unique())) or '—'}"
            " members ≥ τ), each "
            "against all non-members. ε_lb: empirical ε lower bound of the chosen attack (Clopper–Pearson "
            "95%, over its ROC); in brackets the DP accountant's ε where the defense has one."]
    for n in sorted(unmeasured):
        note.append(f"¹ n/m: not measurable: the victim has {n} non-members, so the FPR resolution is "
                    f"1/{n} = {1 / n:.2g}; an FPR level below it cannot be measured.")
    if (table.get("chosen_attack", pd.Series(dtype=str)).fillna("") == "").any():
        note.append("² no chosen attack: choosing on the shadows needs at least two shadow models "
                    "(or the combination failed).")
    return "\n".join(lines) + "\n" + "\n".join(note) + "\n"


def time_cost_table(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's time-cost table: victim fine-tuning seconds per defense (pruned rows; with
    repeats, the mean over the seeds)."""
    pruned = table[table["pruning_method"] != "none"]
    return pruned.pivot_table(
        index=["dataset", "model", "pruning_method", "sparsity"], columns="defense",
        values="finetune_seconds", aggfunc="mean",
    ).reset_index()


_REFERENCE_STYLE = {"unpruned": ("*", "black", "unpruned (reference)"),
                    "one_shot": ("D", "dimgrey", "one-shot pruning (reference)")}


def plot_privacy_utility(table: pd.DataFrame) -> Figure:
    """Test accuracy against the chosen attack's accuracy (the headline, filled), one point per
    defense and pruning setting; a hollow marker joined to it shows the max over attacks (the
    upper bound). The references (unpruned, one-shot pruning) are black/grey stars and diamonds,
    not defense colours; the Pareto frontier of the defenses (nothing both more private and more
    useful) is a dashed step line. With several seeds per combination (a ``seed`` column) each
    point is the mean with ± one standard deviation as error bars."""
    fig = Figure(figsize=(8, 5.6))
    ax = fig.subplots()
    ok = table[table["status"] == "ok"] if "status" in table else table
    ok = ok.assign(_x=ok["chosen_acc"].where(ok["chosen_acc"].notna(), ok["max_attack_acc"])
                   if "chosen_acc" in ok else ok["max_attack_acc"])
    if "seed" in ok and ok["seed"].nunique() > 1:  # repeats: one point per combination, the mean over seeds
        m = combination_means(ok)
        agg = m.assign(x=m["_x"], x_sd=m["_x_std"], y=m["test_acc"], y_sd=m["test_acc_std"],
                       mx=m["max_attack_acc"], n=m["n_seeds"])
    else:  # one point per row
        agg = ok.assign(x=ok["_x"], x_sd=np.nan, y=ok["test_acc"], y_sd=np.nan, mx=ok["max_attack_acc"], n=1)
    defenses = [d for d in dict.fromkeys(agg["defense"]) if d not in _REFERENCE_STYLE]
    colours = {d: f"C{i % 10}" for i, d in enumerate(defenses)}
    settings = [s for s in dict.fromkeys(zip(agg["pruning_method"], agg["sparsity"])) if s[0] != "none"]
    shapes = {s: m for s, m in zip(settings, "osv^<>phX")}
    several = len(settings) > 1
    labels: list[tuple[float, float, str, Any]] = []
    seen: set[str] = set()
    for _, r in agg.iterrows():
        ref = _REFERENCE_STYLE.get(r["defense"])
        setting = (r["pruning_method"], r["sparsity"])
        if ref:
            marker, colour, legend = ref
            size = 110
        else:
            marker, colour, size = shapes.get(setting, "o"), colours[r["defense"]], 50
            legend = r["defense"]
        name = legend if legend not in seen else None
        seen.add(legend)
        if r["n"] > 1:
            ax.errorbar(r["x"], r["y"], xerr=r["x_sd"], yerr=r["y_sd"], fmt="none", ecolor=colour, elinewidth=0.9,
                        capsize=2, alpha=0.8)
        ax.scatter([r["x"]], [r["y"]], marker=marker, s=size, color=colour, label=name, zorder=3,
                   edgecolors="black" if ref else "none", linewidths=0.5)
        ax.scatter([r["mx"]], [r["y"]], marker=marker, s=size * 0.8, facecolors="none", edgecolors=colour,
                   linewidths=0.8, zorder=2)
        ax.plot([r["x"], r["mx"]], [r["y"]] * 2, color=colour, lw=0.6, alpha=0.5)
        text = ("unpruned" if r["defense"] == "unpruned" else r["defense"])
        if several and r["defense"] != "unpruned":
            text += f" ({r['pruning_method'].replace('_', ' ')} {r['sparsity']:.0%})"
        labels.append((r["x"], r["y"], text, colour))
    front = _pareto([(r["x"], r["y"]) for _, r in agg.iterrows() if r["defense"] not in _REFERENCE_STYLE])
    if len(front) > 1:
        fx, fy = zip(*front)
        ax.step(fx, fy, where="post", color="#1f6f4a", lw=1.2, ls="--", label="Pareto frontier (defenses)", zorder=1)
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    for s, m in shapes.items() if several else []:
        ax.scatter([], [], marker=m, color="grey", label=f"{s[0]} @ {s[1]:.0%}")
    ax.scatter([], [], marker="o", facecolors="none", edgecolors="grey", label="hollow: max over attacks")
    if (agg["n"] > 1).any():
        ax.errorbar([], [], xerr=[], yerr=[], fmt="none", ecolor="grey", label=f"± 1 sd over seeds (n = {int(agg['n'].max())})")
    ax.margins(0.12)
    ax.set_xlabel("chosen attack accuracy (balanced) — lower is more private")
    ax.set_ylabel("victim test accuracy — higher is more useful")
    datasets = ", ".join(sorted(ok["dataset"].unique())) if "dataset" in ok else ""
    ax.set_title(f"privacy–utility trade-off ({datasets})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    _place_labels(ax, labels)
    return fig


def roc_curves_by_combination(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ROC curves of every evaluated combination, by a label naming its defense (and its
    pruning: ``variant (method @ sparsity)``), for :func:`plot_roc_curves`."""
    return {_combination_label(r): r["roc"] for r in results if r.get("status") == "ok" and r.get("roc")}


def roc_floors(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per combination label, the FPR resolution 1/n_nonmembers where its ROC axis starts."""
    return {_combination_label(r): 1.0 / r["n_nonmembers"] for r in results
            if r.get("status") == "ok" and r.get("roc") and r.get("n_nonmembers")}


def plot_roc_curves(curves: dict[str, dict[str, dict[str, Sequence[float]]]],
                    floors: Mapping[str, float] | None = None,
                    metrics: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> Figure:
    """Victim ROC curves on log-log axes: one panel per defense, one line per attack.

    Args:
        curves: ``{defense label: {attack: {"fpr": [...], "tpr": [...]}}}``.
        floors: per label, the FPR resolution 1/n_nonmembers: the panel's FPR axis starts there
            (points below it, i.e. FPR 0, are drawn at it); missing: 1e-4.
        metrics: per label, ``{attack: {"auc": ..., "tpr_at_1fpr": ...}}``: with it each panel has
            its own legend with every attack's AUC and TPR at 1% FPR; without it one shared legend.
            Legends sit to the right of their panel, inside the figure (nothing is clipped).
    """
    floors = floors or {}
    n = max(len(curves), 1)
    cols = min(3 if metrics else 4, n)
    rows = int(np.ceil(n / cols))
    panel_w = 7.2 if metrics else 4.0
    fig = Figure(figsize=(panel_w * cols + (0 if metrics else 1.6), 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (label, attacks) in zip(axes.flat, curves.items()):
        lo = float(floors.get(label, 1e-4))
        own = (metrics or {}).get(label)
        for attack, pts in attacks.items():
            fpr = np.clip(np.asarray(pts["fpr"], dtype=float), lo, 1)
            tpr = np.clip(np.asarray(pts["tpr"], dtype=float), lo, 1)
            ax.plot(fpr, tpr, lw=1, label=_roc_legend(attack, (own or {}).get(attack)) if own else ATTACKS.label(attack))
        _loglog(ax, lo)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(f"FPR (from 1/n_non = {lo:.2g})" if label in floors else "FPR")
        if own:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles and not metrics:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    return fig


def plot_memorisation_slices(table: pd.DataFrame) -> Figure:
    """Per defense (one group of bars per row), the chosen attack's TPR at its decision
    threshold on the victim's high-memorisation members (score ≥ τ) and on the others, with the
    decision's FPR as a line: how much the high-risk slice is exposed."""
    ok = table[(table["status"] == "ok")] if "status" in table else table
    if "chosen_tpr_high" in ok:
        ok = ok[ok["chosen_tpr_high"].notna() | ok["chosen_tpr_low"].notna()]
    fig = Figure(figsize=(max(6.0, 0.9 * len(ok) + 2), 4.5))
    ax = fig.subplots()
    if ok.empty:
        ax.text(0.5, 0.5, "no memorisation slices (no chosen attack or no scores)", ha="center", va="center")
        ax.axis("off")
        return fig
    labels = [(r["defense"] if r["pruning_method"] == "none" else f"{r['defense']}\n{r['pruning_method']} @ {r['sparsity']:.0%}")
              + f"\n({ATTACKS.label(r['chosen_attack'])})" for _, r in ok.iterrows()]
    x = np.arange(len(ok))
    ax.bar(x - 0.2, ok["chosen_tpr_high"], 0.4, label="members, mem-score ≥ τ", color="#c0392b")
    ax.bar(x + 0.2, ok["chosen_tpr_low"], 0.4, label="members, mem-score < τ", color="#3b6ea5")
    ax.scatter(x, ok["chosen_fpr_decision"], marker="_", s=400, color="black", label="FPR (non-members)", zorder=3)
    ax.set_xticks(x, labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("TPR at the chosen attack's decision")
    tau = ", ".join(f"{t:g}" for t in sorted(ok["tau"].dropna().unique())) if "tau" in ok else "—"
    n_high = ", ".join(str(int(n)) for n in sorted(ok["n_high"].dropna().unique())) if "n_high" in ok else "—"
    ax.set_title(f"exposure of high-memorisation members (τ = {tau}; {n_high} victim members ≥ τ)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

