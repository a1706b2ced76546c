"""Nodes of the pruning_defense pipeline: train the victim and shadows, then prune and
fine-tune every one of them under one defense per combination (SPEC §6–7)."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from wemem.ml.defenses import finetune_config, prune_and_finetune, setting_names
from wemem.ml.experiment import iter_roles, load_models, make_model, models_payload, role_scores
from wemem.ml.train import TrainConfig, accuracy, fit, resolve_device, seed_everything
from wemem.structure import Combo
from wemem.pipelines.node_callable import NodeCallable

log = logging.getLogger(__name__)

SCORE_DEFENSES = ("rsw", "rmr", "swmr")


def train_original_models(
    arrays: dict[str, np.ndarray],
    splits: dict[str, np.ndarray],
    info: dict[str, Any],
    training: dict[str, Any],
    seed: int,
    device: str,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trains the victim and every shadow the same way (Adam, early stopping on dev, SPEC §3).

    Returns:
        ``original_models`` (state dicts by role) and ``training_log`` (accuracies, epochs, time).
    """
    dev = resolve_device(device)
    models, logs = {}, {}
    for i, role in enumerate(iter_roles(arrays, splits, dev)):
        role_seed = int(seed) + 1000 * i
        seed_everything(role_seed)
        model = make_model(info, dev)
        cfg = TrainConfig(
            epochs=int(training["epochs"]), patience=int(training["patience"]),
            batch_size=int(training["batch_size"]), lr=float(training["lr"]),
            weight_decay=float(training["weight_decay"]), device=str(dev), seed=role_seed,
            progress=bool(progress), desc=f"train {role.name}",
        )
        result = fit(model, role.train, role.dev, cfg)
        logs[role.name] = {
            "train_acc": accuracy(model, *role.train),
            "dev_acc": result.best_dev_acc,
            "test_acc": accuracy(model, *role.test),
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "seconds": result.seconds,
        }
        log.info("%s: train %.3f, test %.3f after %d epochs (%.1fs)", role.name, logs[role.name]["train_acc"],
                 logs[role.name]["test_acc"], result.epochs_run, result.seconds)
        models[role.name] = model
    return models_payload(models, {"dataset": info["name"], "model": info["model"], "seed": int(seed)}), logs


def resolve_defense(variant: str, defenses: dict[str, Any], info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The strategy name and settings of a defense variant, with the dataset's defaults for
    settings the variant leaves out (w, s, tau from ``datasets.<name>.defense_defaults``)."""
    if variant not in defenses:
        raise ValueError(
            f"defense variant {variant!r} (pruning_defense.grid.defenses) is not defined under 'defenses' "
            f"in conf/base/parameters_pruning_defense.yml; defined: {sorted(defenses)}"
        )
    settings = dict(defenses[variant])
    name = settings.pop("defense", variant)
    allowed, _ = setting_names(name)
    for key, value in info.get("defense_defaults", {}).items():
        if key in allowed and key not in settings:
            settings[key] = value
    return name, settings


class PruneNode(NodeCallable):
    """Node function that prunes and defends every model for one combination (a module-level
    class, so process-based runners can pickle it)."""

    def __init__(self, combo: Combo) -> None:
        self.combo = combo
        super().__init__(f"prune_and_defend_{combo.namespace.replace('.', '_')}")

    def __call__(
        self,
        original_models: dict[str, Any],
        arrays: dict[str, np.ndarray],
        splits: dict[str, np.ndarray],
        rankings: pd.DataFrame,
        info: dict[str, Any],
        pruning: dict[str, Any],
        defenses: dict[str, Any],
        seed: int,
        device: str,
        progress: bool,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Prunes the victim and every shadow with the same schedule and defense.

        A model whose fine-tuning diverges (NaN/inf loss) marks this combination as failed in
        the log instead of stopping the run; the evaluation then reports it as failed.
        """
        combo = self.combo
        variant = "base" if combo.one_shot else combo.variant
        name, settings = resolve_defense(variant, defenses, info)
        dev = resolve_device(device)
        scores_table = rankings[rankings["order"] == "h2l"][["index", "label", "score"]]
        originals = load_models(original_models, info, dev)
        ft = pruning["finetune"]
        models, logs = {}, {}
        meta = {**combo.as_dict(), "defense": name, "settings": settings, "dataset": info["name"],
                "model": info["model"], "status": "ok"}
        for i, role in enumerate(iter_roles(arrays, splits, dev)):
            role_seed = int(seed) + 1000 * i + 7
            seed_everything(role_seed)
            model = originals[role.name].train()
            scores = role_scores(scores_table, splits, role.train_rows) if name in SCORE_DEFENSES else None
            cfg = finetune_config(
                epochs=int(ft["epochs"]), patience=int(ft["patience"]), batch_size=int(ft["batch_size"]),
                lr=float(ft["lr"]), device=str(dev), seed=role_seed, progress=bool(progress),
                desc=f"{combo.namespace} {role.name}",
            )
            try:
                model, record = prune_and_finetune(
                    model, method=combo.method, final_sparsity=float(combo.sparsity), n_iter=int(pruning["n_iter"]),
                    one_shot=combo.one_shot, defense=name, settings=settings, train=role.train, dev=role.dev,
                    test=role.test, scores=scores, cfg=cfg,
                )
            except FloatingPointError as exc:
                log.error("%s: %s diverged: %s", combo.namespace, role.name, exc)
                meta.update(status="failed", error=f"{role.name}: {exc}")
                return {"meta": meta, "models": {}}, {"meta": meta, "models": logs}
            record["train_acc"] = accuracy(model, *role.train)
            record["test_acc"] = accuracy(model, *role.test)
            logs[role.name] = record
            models[role.name] = model
            if role.name == "victim":
                log.info("%s victim: test %.3f, sparsity %.3f, fine-tuning %.1fs%s", combo.namespace,
                         record["test_acc"], record["final_global_sparsity"], record["finetune_seconds"],
                         f", ε={record['epsilon']:.3g}" if "epsilon" in record else "")
        return models_payload(models, meta), {"meta": meta, "models": _jsonable(logs)}



def make_prune_node(combo: Combo) -> PruneNode:
    """The node function that prunes and defends every model for one combination."""
    return PruneNode(combo)


def _jsonable(obj: Any) -> Any:
    """Plain JSON types (NaN/inf become null) for the fine-tuning log."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    return obj
