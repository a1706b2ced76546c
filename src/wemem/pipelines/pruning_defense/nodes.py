"""Nodes of the pruning_defense pipeline: train the victim and shadows, then prune and
fine-tune every one of them under one defense per combination (SPEC §6–7)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from wemem.ml.defenses import resolve_settings
from wemem.ml.grid import Combo
from wemem.ml.roles import prune_roles, train_roles
from wemem.ml.train import FinetuneSettings, TrainSettings, resolve_device
from wemem.params import DatasetSettings
from wemem.pipelines.isolation import failed_payloads, log_failure
from wemem.pipelines.node_callable import NodeCallable


def train_original_models(
    arrays: dict[str, np.ndarray],
    splits: dict[str, np.ndarray],
    info: dict[str, Any],
    dataset: DatasetSettings,
    training: TrainSettings,
    seed: int,
    device: str,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trains the victim and every shadow (SPEC §3).

    Returns:
        ``original_models`` (state dicts by role) and ``training_log`` (accuracies, epochs, time).
    """
    return train_roles(arrays, splits, info, dataset.model, training, int(seed), resolve_device(device), bool(progress))


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
        dataset: DatasetSettings,
        variant: dict[str, Any],
        n_iter: int,
        finetune: FinetuneSettings,
        seed: int,
        device: str,
        progress: bool,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Prunes the victim and every shadow with the same schedule and the combination's
        defense variant (``params:defenses.<variant>``, completed by the dataset's defaults).
        Any exception makes this combination ``failed`` (with its message), not the run."""
        defense = variant.get("defense", self.combo.defense_variant)
        try:
            settings = resolve_settings(defense, variant, dataset.defense_defaults.as_dict())
            return prune_roles(original_models, arrays, splits, rankings, info, dataset.model, self.combo, defense,
                               settings, n_iter, finetune, int(seed), resolve_device(device), bool(progress))
        except Exception as exc:  # noqa: BLE001 - one combination's failure never stops the others
            error = log_failure(self.combo.namespace, "pruning and defending", exc)
            meta = {**self.combo.as_dict(), "defense": defense, "dataset": info["name"], "model": dataset.model,
                    "settings": {k: v for k, v in variant.items() if k != "defense"}}
            return failed_payloads(meta, error)
