"""The model roles of one run (the victim and its shadows), trained, then pruned and defended
the same way; no Kedro.

Every role gets its own seed (:func:`wemem.ml.experiment.role_seed`). A role whose
fine-tuning diverges marks the whole combination ``failed`` with its message; the caller goes
on with the other combinations.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from wemem.ml.defenses import DEFENSES, finetune_config, prune_and_finetune
from wemem.ml.experiment import iter_roles, load_models, make_model, models_payload, role_scores, role_seed
from wemem.ml.grid import Combo
from wemem.ml.schema import Section
from wemem.ml.train import FinetuneSettings, TrainConfig, TrainSettings, accuracy, fit, seed_everything

__all__ = ["train_roles", "prune_roles", "jsonable"]

log = logging.getLogger(__name__)


def train_roles(
    arrays: dict[str, np.ndarray], splits: dict[str, np.ndarray], info: dict[str, Any], model: str,
    training: TrainSettings, seed: int, device: torch.device, progress: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trains the victim and every shadow the same way (Adam, early stopping on dev, SPEC §3).

    Returns:
        the models payload (state dicts by role, see :func:`models_payload`) and a log of
        accuracies, epochs and seconds by role.
    """
    models, logs = {}, {}
    for i, role in enumerate(iter_roles(arrays, splits, device)):
        rseed = role_seed(seed, i, "train")
        seed_everything(rseed)
        net = make_model(model, info, device)
        cfg = TrainConfig(
            epochs=training.epochs, patience=training.patience, batch_size=training.batch_size, lr=training.lr,
            weight_decay=training.weight_decay, device=str(device), seed=rseed, progress=progress,
            desc=f"train {role.name}",
        )
        result = fit(net, role.train, role.dev, cfg)
        logs[role.name] = {
            "train_acc": accuracy(net, *role.train),
            "dev_acc": result.best_dev_acc,
            "test_acc": accuracy(net, *role.test),
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "seconds": result.seconds,
        }
        log.info("%s: train %.3f, test %.3f after %d epochs (%.1fs)", role.name, logs[role.name]["train_acc"],
                 logs[role.name]["test_acc"], result.epochs_run, result.seconds)
        models[role.name] = net
    return models_payload(models, {"dataset": info["name"], "model": model, "seed": int(seed)}), logs


def prune_roles(
    original_models: dict[str, Any], arrays: dict[str, np.ndarray], splits: dict[str, np.ndarray],
    rankings: pd.DataFrame, info: dict[str, Any], model: str, combo: Combo, defense: str, settings: Section,
    n_iter: int, finetune: FinetuneSettings, seed: int, device: torch.device, progress: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Prunes the victim and every shadow with the same schedule and defense (SPEC §6–7).

    ``settings`` is the defense's validated settings; the record keeps the ones the user set
    (variant or dataset defaults). A role whose fine-tuning diverges (NaN/inf loss) marks the
    combination as failed instead of raising: the evaluation then reports it as failed.

    Returns:
        the pruned models payload and the fine-tuning log ``{"meta": ..., "models": {role: record}}``.
    """
    needs_scores = "scores" in DEFENSES[defense].needs
    scores_table = rankings[rankings["order"] == "h2l"][["index", "label", "score"]]
    originals = load_models(original_models, model, info, device)
    models, logs = {}, {}
    meta = {**combo.as_dict(), "defense": defense, "settings": settings.model_dump(exclude_unset=True),
            "dataset": info["name"], "model": model, "status": "ok"}
    for i, role in enumerate(iter_roles(arrays, splits, device)):
        rseed = role_seed(seed, i, "prune")
        seed_everything(rseed)
        net = originals[role.name].train()
        scores = role_scores(scores_table, splits, role.train_rows) if needs_scores else None
        cfg = finetune_config(
            epochs=finetune.epochs, patience=finetune.patience, batch_size=finetune.batch_size, lr=finetune.lr,
            device=str(device), seed=rseed, progress=progress, desc=f"{combo.namespace} {role.name}",
        )
        try:
            net, record = prune_and_finetune(
                net, method=combo.method, final_sparsity=float(combo.sparsity), n_iter=int(n_iter),
                one_shot=combo.one_shot, defense=defense, settings=settings, train=role.train, dev=role.dev,
                test=role.test, scores=scores, cfg=cfg,
            )
        except FloatingPointError as exc:
            log.error("%s: %s diverged: %s", combo.namespace, role.name, exc)
            meta.update(status="failed", error=f"{role.name}: {exc}")
            return {"meta": meta, "models": {}}, {"meta": meta, "models": logs}
        record["train_acc"] = accuracy(net, *role.train)
        record["test_acc"] = accuracy(net, *role.test)
        logs[role.name] = record
        models[role.name] = net
        if role.name == "victim":
            log.info("%s victim: test %.3f, sparsity %.3f, fine-tuning %.1fs%s", combo.namespace,
                     record["test_acc"], record["final_global_sparsity"], record["finetune_seconds"],
                     f", ε={record['epsilon']:.3g}" if "epsilon" in record else "")
    return models_payload(models, meta), {"meta": meta, "models": jsonable(logs)}


def jsonable(obj: Any) -> Any:
    """Plain JSON types (NaN/inf become null), e.g. for the fine-tuning log."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.tolist())
    return obj
