"""One combination's result as flat MLflow params and metrics, its run name, and the summary of
several seeds' results (no MLflow import here)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["child_params", "child_metrics", "child_run_name", "child_tags", "REFERENCE_VARIANTS",
           "summary_run_name", "summary_metrics"]

REFERENCE_VARIANTS = ("unpruned", "one_shot")
"""Combinations that are references, not defenses."""


def child_run_name(result: dict[str, Any], repeats: bool = False) -> str:
    """The child run's name, leading with what a reader compares: the defense, then the pruning
    (``rsw · l1_unstructured 60%``); the references read ``unpruned`` and
    ``one_shot · l1_unstructured 60%``. With repeats the seed follows (``rsw · l1_unstructured 60%
    · seed 43``)."""
    variant = str(result.get("variant") or result.get("namespace"))
    name = variant if not result.get("method") else \
        f"{variant} · {result['method']} {float(result.get('sparsity') or 0):.0%}"
    seed = result.get("seed")
    return f"{name} · seed {seed}" if repeats and seed is not None else name


def child_tags(result: dict[str, Any]) -> dict[str, str]:
    """Tags of a child run: ``wemem.defense`` (the grid's variant), ``wemem.pruning`` and, on the
    unpruned and one-shot rows, ``wemem.reference=true`` (false elsewhere), so a search such as
    ``tags.wemem.reference = 'false'`` keeps the defenses only."""
    variant = str(result.get("variant") or "")
    pruning = "none" if not result.get("method") else f"{result['method']} {float(result.get('sparsity') or 0):.0%}"
    return {"wemem.defense": variant, "wemem.pruning": pruning,
            "wemem.reference": "true" if variant in REFERENCE_VARIANTS else "false"}


def child_params(result: dict[str, Any], seed: Any) -> dict[str, str]:
    """MLflow params of one combination: what it is, the defense's settings (``defense.<key>``,
    as its schema validated them) and, for rmr/swmr, what τ selected (``defense.risky_fraction``,
    ``defense.n_risky``, ``defense.tau_threshold``)."""
    params = {
        "dataset": result.get("dataset"),
        "model": result.get("model"),
        "pruning_method": result.get("method") or "none",
        "sparsity": result.get("sparsity") if result.get("sparsity") is not None else 0.0,
        # a reference row names itself (the one-shot row fine-tunes with Base, but is not "base")
        "defense": result.get("variant") if result.get("variant") in REFERENCE_VARIANTS else result.get("defense"),
        "variant": result.get("variant"),
        "reference": result.get("variant") in REFERENCE_VARIANTS,
        "status": result.get("status", "ok"),
        "chosen_attack": result.get("chosen_attack") or "",
        "strongest_attack": result.get("strongest_attack") or "",
        "seed": seed,
    }
    params.update({f"defense.{k}": v for k, v in (result.get("settings") or {}).items()})
    # what τ selected (rmr, swmr): the risky fraction, their number, the threshold used
    params.update({f"defense.{k}": result[k] for k in ("risky_fraction", "n_risky", "tau_threshold") if k in result})
    return {k: str(v) for k, v in params.items()}


def child_metrics(result: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics of one combination: accuracy, sample counts, cost, the accountant's ε,
    every attack's metrics (with its empirical ``eps_lb`` and memorisation slices), the chosen
    attack's metrics again as ``chosen_<metric>`` and the max over attacks (upper bound). A value
    that is not measurable (NaN, e.g. a TPR below the 1/n_nonmembers resolution) is left out."""
    metrics: dict[str, float] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            metrics[key.replace("@", "_")] = float(value)

    for key in ("test_acc", "train_acc", "n_members", "n_nonmembers", "n_high", "finetune_seconds",
                "final_sparsity", "epsilon", "delta"):
        put(key, result.get(key))
    attacks = result.get("attacks") or {}
    for attack, m in attacks.items():
        for k, v in m.items():
            put(f"{attack}_{k}", v)
    chosen = result.get("chosen_attack")
    for k, v in (attacks.get(chosen) or {}).items():
        put(f"chosen_{k}", v)
    accs = [float(m["balanced_acc"]) for m in attacks.values()]
    if accs:
        put("max_attack_acc", max(accs))
    return metrics


def summary_run_name(result: dict[str, Any], n_seeds: int) -> str:
    """The MLflow run name of one combination's summary over the seeds, defense first like its
    children (``rsw · l1_unstructured 60% · mean of 3 seeds``); ``result`` is any of its seeds'."""
    return f"{child_run_name(result)} · mean of {n_seeds} seeds"


def summary_metrics(results: list[dict[str, Any]]) -> dict[str, tuple[dict[str, str], dict[str, float]]]:
    """Per combination (namespace) of ``results`` (attack results of several seeds), the summary
    run's params and metrics: every child metric as ``<metric>_mean/_std/_ci_low/_ci_high`` over
    the seeds whose status is ok (NaN ones left out), ``n_seeds`` and ``n_failed``."""
    import pandas as pd

    from wemem.ml.aggregate import aggregate_seeds

    rows = [{"namespace": r["namespace"], "seed": r.get("seed"), "status": r.get("status", "ok"), **child_metrics(r)}
            for r in results]
    if not rows:
        return {}
    agg = aggregate_seeds(pd.DataFrame(rows), keys=["namespace"])
    first = {r["namespace"]: r for r in results}
    out = {}
    for rec in agg.to_dict("records"):
        ns = rec["namespace"]
        params = {k: v for k, v in child_params(first[ns], "").items()
                  if k in ("dataset", "model", "pruning_method", "sparsity", "defense", "variant")}
        params.update(seeds=str(rec["seeds"]), n_failed=str(rec["n_failed"]))
        metrics = {k: float(v) for k, v in rec.items() if k not in ("namespace", "seeds", "n_failed")
                   and isinstance(v, (int, float)) and math.isfinite(v)}
        out[ns] = (params, metrics)
    return out
