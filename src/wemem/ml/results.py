"""One combination's result as flat MLflow params and metrics (no MLflow import here)."""

from __future__ import annotations

from typing import Any

__all__ = ["child_params", "child_metrics"]


def child_params(result: dict[str, Any], seed: Any) -> dict[str, str]:
    """MLflow params of one combination: what it is, the defense's settings (``defense.<key>``,
    as its schema validated them) and, for rmr/swmr, what τ selected (``defense.risky_fraction``,
    ``defense.n_risky``, ``defense.tau_threshold``)."""
    params = {
        "dataset": result.get("dataset"),
        "model": result.get("model"),
        "pruning_method": result.get("method") or "none",
        "sparsity": result.get("sparsity") if result.get("sparsity") is not None else 0.0,
        "defense": result.get("defense"),
        "variant": result.get("variant"),
        "status": result.get("status", "ok"),
        "seed": seed,
    }
    params.update({f"defense.{k}": v for k, v in (result.get("settings") or {}).items()})
    # what τ selected (rmr, swmr): the risky fraction, their number, the threshold used
    params.update({f"defense.{k}": result[k] for k in ("risky_fraction", "n_risky", "tau_threshold") if k in result})
    return {k: str(v) for k, v in params.items()}


def child_metrics(result: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics of one combination: accuracy, every attack's metrics, cost."""
    metrics: dict[str, float] = {}
    for key in ("test_acc", "train_acc", "finetune_seconds", "final_sparsity", "epsilon"):
        value = result.get(key)
        if isinstance(value, (int, float)):
            metrics[key] = float(value)
    accs = {}
    for attack, m in (result.get("attacks") or {}).items():
        for k, v in m.items():
            metrics[f"{attack}_{k}".replace("@", "_")] = float(v)
        accs[attack] = float(m["balanced_acc"])
    if accs:
        metrics["max_attack_acc"] = max(accs.values())
    return metrics
