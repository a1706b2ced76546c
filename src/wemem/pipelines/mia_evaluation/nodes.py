"""Nodes of the mia_evaluation pipeline: model outputs, ten adaptive attacks, reports."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from wemem.ml.attacks import AttackConfig, AttackData, ModelOutputs, compute_sensitivity, run_attacks
from wemem.ml.attacks.metrics import roc_points
from wemem.ml.experiment import iter_roles, load_models, role_data
from wemem.ml.reporting import (
    comparison_markdown,
    comparison_table,
    plot_privacy_utility,
    plot_roc_curves,
    time_cost_table,
)
from wemem.ml.train import predict_proba, resolve_device
from wemem.structure import Combo
from wemem.pipelines.node_callable import NodeCallable

log = logging.getLogger(__name__)


def _as_input(x: torch.Tensor) -> torch.Tensor:
    """Float model input (images scaled to [0, 1]) so the SAMIA perturbation is meaningful."""
    return x.float().div(255.0) if x.dtype == torch.uint8 else x.float()


def compute_model_outputs(
    models: dict[str, Any],
    arrays: dict[str, np.ndarray],
    splits: dict[str, np.ndarray],
    info: dict[str, Any],
    mia: dict[str, Any],
    seed: int,
    device: str,
) -> dict[str, np.ndarray]:
    """Softmax outputs every attack needs, for one combination.

    Each model on its own members (train) and non-members (test), with the SAMIA sensitivity;
    every shadow (a reference OUT model) on the victim's samples; the victim and the shadows on
    population samples (the victim's dev set, never used for scoring).
    """
    if models["meta"].get("status", "ok") != "ok":
        return {"failed": np.array([1])}
    dev = resolve_device(device)
    nets = load_models(models, info, dev)
    samia = mia.get("samia", {})
    out: dict[str, np.ndarray] = {}
    target = None
    for role in iter_roles(arrays, splits, dev):
        net = nets[role.name]
        x = torch.cat([role.train[0], role.test[0]])
        y = torch.cat([role.train[1], role.test[1]])
        member = np.r_[np.ones(len(role.train[1]), bool), np.zeros(len(role.test[1]), bool)]
        out[f"{role.name}/probs"] = predict_proba(net, x).cpu().numpy()
        out[f"{role.name}/labels"] = y.cpu().numpy()
        out[f"{role.name}/member"] = member
        out[f"{role.name}/sensitivity"] = compute_sensitivity(
            net, _as_input(x), n_draws=int(samia.get("n_draws", 10)), eps=float(samia.get("eps", 1e-3)), seed=int(seed)
        ).cpu().numpy()
        if role.name == "victim":
            target = (x, role.dev[0])
            out["population/labels"] = role.dev[1].cpu().numpy()
            out["victim/population_probs"] = predict_proba(net, role.dev[0]).cpu().numpy()
    shadows = [n for n in nets if n != "victim"]
    out["reference/on_target"] = np.stack([predict_proba(nets[s], target[0]).cpu().numpy() for s in shadows])
    out["reference/on_population"] = np.stack([predict_proba(nets[s], target[1]).cpu().numpy() for s in shadows])
    return out


def _outputs(out: dict[str, np.ndarray], role: str) -> ModelOutputs:
    return ModelOutputs(
        probs=out[f"{role}/probs"], labels=out[f"{role}/labels"], member=out[f"{role}/member"].astype(bool),
        sensitivity=out.get(f"{role}/sensitivity"),
    )


def attack_config(mia: dict[str, Any], seed: int, device: str) -> AttackConfig:
    """The attack settings from ``params:mia_evaluation``."""
    am = mia.get("attack_model", {})
    rmia = mia.get("rmia", {})
    return AttackConfig(
        epochs=int(am.get("epochs", 100)), lr=float(am.get("lr", 1e-3)), momentum=float(am.get("momentum", 0.9)),
        weight_decay=float(am.get("weight_decay", 5e-4)), batch_size=int(am.get("batch_size", 128)),
        milestones=tuple(int(m) for m in am.get("milestones", (50, 75))),
        rmia_a=float(rmia.get("a", 0.3)), rmia_gamma=float(rmia.get("gamma", 1.0)),
        device=str(resolve_device(device)), seed=int(seed), attacks=tuple(mia["attacks"]),
    )


class AttackNode(NodeCallable):
    """Node function that runs every attack on one combination's victim (a module-level class,
    so process-based runners can pickle it)."""

    def __init__(self, combo: Combo) -> None:
        self.combo = combo
        super().__init__(f"run_membership_attacks_{combo.namespace.replace('.', '_')}")

    def __call__(
        self, outputs: dict[str, np.ndarray], finetune_log: dict[str, Any], info: dict[str, Any],
        mia: dict[str, Any], seed: int, device: str,
    ) -> dict[str, Any]:
        """Calibrates/trains each attack on the shadows and scores the victim (SPEC §8)."""
        combo = self.combo
        meta = finetune_log.get("meta", {})
        victim_log = finetune_log.get("models", finetune_log).get("victim", {})
        result: dict[str, Any] = {
            **combo.as_dict(), "dataset": info["name"], "model": info["model"],
            "status": meta.get("status", "ok"), "defense": meta.get("defense", combo.variant),
            "settings": meta.get("settings", {}),
        }
        result["settings_text"] = "; ".join(f"{k}={v}" for k, v in sorted(result["settings"].items()))
        if "failed" in outputs or result["status"] != "ok":
            result.update(status="failed", error=meta.get("error", "fine-tuning failed"), attacks={})
            log.warning("%s: fine-tuning failed, no attacks run (%s)", combo.namespace, result["error"])
            return result
        shadow_roles = sorted({k.split("/")[0] for k in outputs if k.startswith("shadow_")}, key=lambda s: int(s.split("_")[1]))
        data = AttackData(
            target=_outputs(outputs, "victim"),
            shadows=[_outputs(outputs, s) for s in shadow_roles],
            reference_on_target=outputs["reference/on_target"],
            target_on_population=outputs["victim/population_probs"],
            reference_on_population=outputs["reference/on_population"],
            population_labels=outputs["population/labels"],
        )
        results = run_attacks(data, attack_config(mia, seed, device))
        member = data.target.member
        correct = data.target.probs.argmax(1) == data.target.labels
        result.update(
            train_acc=float(correct[member].mean()), test_acc=float(correct[~member].mean()),
            finetune_seconds=victim_log.get("finetune_seconds", victim_log.get("seconds")),
            final_sparsity=victim_log.get("final_global_sparsity", 0.0),
            epsilon=victim_log.get("epsilon"),
            attacks={name: {k: float(v) for k, v in r.metrics.items()} for name, r in results.items()},
        )
        n_points = int(mia.get("roc_points", 200))
        result["roc"] = {}
        for name, r in results.items():
            fpr, tpr = roc_points(r.scores, member)
            # points spaced evenly in log(FPR), so the low-FPR end of a log-log plot keeps its detail
            grid = np.searchsorted(fpr, np.logspace(-5, 0, n_points))
            keep = np.unique(np.clip(np.r_[0, grid, grid - 1, len(fpr) - 1], 0, len(fpr) - 1))
            result["roc"][name] = {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}
        strongest = max(result["attacks"].items(), key=lambda kv: kv[1]["balanced_acc"])
        log.info("%s: victim test acc %.3f, strongest attack %s %.3f", combo.namespace, result["test_acc"],
                 strongest[0], strongest[1]["balanced_acc"])
        return result



def make_attack_node(combo: Combo) -> AttackNode:
    """The node function that runs every attack on one combination's victim."""
    return AttackNode(combo)


def build_reports(
    mia: dict[str, Any], *results: dict[str, Any]
) -> tuple[pd.DataFrame, str, pd.DataFrame, Figure, Figure]:
    """The comparison table (CSV and Markdown), the time-cost table, the privacy–utility
    scatter and the victim ROC curves per defense."""
    table = comparison_table(results)
    attacks = [a for a in mia["attacks"]]
    curves = {
        (r["variant"] if r.get("method") is None else f"{r['variant']} ({r['method']} @ {r['sparsity']:.0%})"): r["roc"]
        for r in results if r.get("status") == "ok" and r.get("roc")
    }
    return (
        table,
        comparison_markdown(table, attacks),
        time_cost_table(table),
        plot_privacy_utility(table),
        plot_roc_curves(curves),
    )
