"""Figure helpers of the reports: label placement without collisions, the Pareto frontier, ROC
legends with AUC and TPR@1%, and the one-panel ROC of the chosen attack per defense."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .attacks import ATTACKS, strongest_attack

__all__ = ["chosen_roc_by_combination", "plot_chosen_roc"]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and np.isnan(v))


def _combination_label(r: dict[str, Any]) -> str:
    return r["variant"] if r.get("method") is None else f"{r['variant']} ({r['method']} @ {r['sparsity']:.0%})"


def _pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (lower x = more private, higher y = more
    useful), sorted by x: the privacy–utility frontier."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _place_labels(ax: Any, items: Sequence[tuple[float, float, str, Any]]) -> None:
    """Annotates each point ``(x, y, text, colour)`` at the first of a ring of offsets where its
    label overlaps neither an earlier label nor a marker (greedy; the last offset when none is free)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = ax.figure
    ax.set_xlim(ax.get_xlim())  # freeze the autoscaled limits before measuring in display space
    ax.set_ylim(ax.get_ylim())
    renderer = (fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)).get_renderer()
    offsets = [(5, 4), (5, -11), (-5, 4), (-5, -11), (0, 10), (0, -16), (12, 0), (-12, 0), (8, 16), (-8, -22),
               (18, 10), (-18, -16), (24, -4), (-24, 4)]
    markers = [ax.transData.transform((x, y)) for x, y, _, _ in items]
    taken: list[Any] = []
    for x, y, text, colour in items:
        chosen = None
        for dx, dy in offsets:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8, color=colour,
                              ha="left" if dx >= 0 else "right")
            box = ann.get_window_extent(renderer).expanded(1.05, 1.15)
            hits_marker = any(box.contains(mx, my) for mx, my in markers)
            if not hits_marker and not any(box.overlaps(b) for b in taken):
                chosen = box
                break
            ann.remove()
        if chosen is None:
            ann = ax.annotate(text, (x, y), xytext=offsets[0], textcoords="offset points", fontsize=8, color=colour,
                              arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.5})
            chosen = ann.get_window_extent(renderer)
        taken.append(chosen)


def _roc_legend(attack: str, metrics: Mapping[str, Any] | None) -> str:
    """``Attack (AUC 0.61, TPR@1% 3.2%)``; TPR@1% is ``n/m`` when not measurable."""
    label = ATTACKS.label(attack) if attack in ATTACKS else attack
    if not metrics:
        return label
    auc, tpr = metrics.get("auc"), metrics.get("tpr_at_1fpr")
    auc_s = "—" if _missing(auc) else f"{float(auc):.2f}"
    tpr_s = "n/m" if _missing(tpr) else f"{100 * float(tpr):.1f}%"
    return f"{label} (AUC {auc_s}, TPR@1% {tpr_s})"


def _loglog(ax: Any, lo: float) -> None:
    ax.plot([lo, 1], [lo, 1], color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, 1)
    ax.set_ylim(lo, 1)
    ax.set_ylabel("TPR")


def chosen_roc_by_combination(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per evaluated combination, the victim ROC of its chosen attack (the strongest where none
    was chosen): ``{"label", "attack", "chosen", "fpr", "tpr", "auc", "tpr_at_1fpr", "floor",
    "reference"}``, for :func:`plot_chosen_roc`. With repeats (results of several seeds) the
    curves are those of the first seed, its seed in each label: a ROC is one draw's curve, and
    the spread over the seeds is in the aggregated table."""
    out = []
    seeds = sorted({r.get("seed") for r in results if r.get("seed") is not None})
    for r in results:
        if r.get("status", "ok") != "ok" or not r.get("roc"):
            continue
        if len(seeds) > 1 and r.get("seed") != seeds[0]:
            continue
        metrics = r.get("attacks") or {}
        attack = r.get("chosen_attack") or ""
        chosen = attack in r["roc"]
        if not chosen:
            attack = (r.get("strongest_attack") or strongest_attack(metrics)[0]) if metrics else next(iter(r["roc"]))
            if attack not in r["roc"]:
                attack = next(iter(r["roc"]))
        m = metrics.get(attack) or {}
        label = _combination_label(r) + (f" (seed {seeds[0]})" if len(seeds) > 1 else "")
        out.append({"label": label, "attack": attack, "chosen": chosen,
                    "fpr": r["roc"][attack]["fpr"], "tpr": r["roc"][attack]["tpr"], "auc": m.get("auc"),
                    "tpr_at_1fpr": m.get("tpr_at_1fpr"),
                    "floor": 1.0 / r["n_nonmembers"] if r.get("n_nonmembers") else 1e-4,
                    "reference": r.get("variant") in ("unpruned", "one_shot")})
    return out


def plot_chosen_roc(curves: Sequence[Mapping[str, Any]]) -> Figure:
    """One log-log panel: per defense, the victim ROC of the attack chosen on the shadows, the
    legend naming the defense, the attack, its AUC and its TPR at 1% FPR ("n/m" where 1/n_nonmembers
    cannot resolve it). The FPR axis starts at the coarsest 1/n_nonmembers of the curves; the
    references (unpruned, one-shot) are black and grey dashed lines."""
    fig = Figure(figsize=(10, 5.6), layout="constrained")
    ax = fig.subplots()
    lo = max([float(c["floor"]) for c in curves] or [1e-4])
    colours = iter(f"C{i % 10}" for i in range(1000))
    for c in curves:
        fpr = np.clip(np.asarray(c["fpr"], dtype=float), lo, 1)
        tpr = np.clip(np.asarray(c["tpr"], dtype=float), lo, 1)
        if c.get("reference"):
            style = {"color": "black" if c["label"].startswith("unpruned") else "dimgrey", "ls": "--", "lw": 1.4}
        else:
            style = {"color": next(colours), "lw": 1.4}
        name = _roc_legend(c["attack"], {"auc": c.get("auc"), "tpr_at_1fpr": c.get("tpr_at_1fpr")})
        ax.plot(fpr, tpr, label=f"{c['label']} — {name}" + ("" if c.get("chosen", True) else " [strongest]"), **style)
    _loglog(ax, lo)
    ax.axvline(0.01, color="#c0392b", lw=0.7, ls=":")
    ax.set_xlabel(f"FPR (log; from 1/n_nonmembers = {lo:.2g}; dotted: 1%)")
    ax.set_title("victim ROC of the chosen attack, per defense")
    if curves:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0)
    return fig
