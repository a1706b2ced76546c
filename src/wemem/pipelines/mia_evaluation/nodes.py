"""Nodes of the mia_evaluation pipeline: short adapters over :mod:`wemem.ml.evaluation` (model
outputs, the attacks on one combination) and :mod:`wemem.ml.reporting` (the reports)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from wemem.ml.evaluation import MiaEvaluationSettings, attack_record, model_outputs
from wemem.ml.grid import Combo
from wemem.ml.reporting import (
    comparison_markdown,
    comparison_table,
    plot_memorisation_slices,
    plot_privacy_utility,
    plot_roc_curves,
    roc_curves_by_combination,
    roc_floors,
    time_cost_table,
)
from wemem.params import DatasetSettings
from wemem.pipelines.node_callable import NodeCallable


def compute_model_outputs(
    models: dict[str, Any],
    arrays: dict[str, np.ndarray],
    splits: dict[str, np.ndarray],
    rankings: pd.DataFrame,
    info: dict[str, Any],
    dataset: DatasetSettings,
    mia: MiaEvaluationSettings,
    seed: int,
    device: str,
) -> dict[str, np.ndarray]:
    """float32 logits (and SAMIA's sensitivity) of every model of one combination, and the
    memorisation scores of the victim's members (from the h2l rankings)."""
    return model_outputs(models, arrays, splits, info, dataset.model, mia.settings_of("samia"), seed, device,
                         memscores=rankings)


class AttackNode(NodeCallable):
    """Node function that runs every attack on one combination's victim (a module-level class,
    so process-based runners can pickle it)."""

    def __init__(self, combo: Combo) -> None:
        self.combo = combo
        super().__init__(f"run_membership_attacks_{combo.namespace.replace('.', '_')}")

    def __call__(
        self, outputs: dict[str, np.ndarray], finetune_log: dict[str, Any], info: dict[str, Any],
        dataset: DatasetSettings, mia: MiaEvaluationSettings, seed: int, device: str,
    ) -> dict[str, Any]:
        """The combination's attack record (see :func:`wemem.ml.evaluation.attack_record`)."""
        return attack_record(self.combo, outputs, finetune_log, dataset=info["name"], model=dataset.model,
                             settings=mia, seed=seed, device=device, tau=dataset.defense_defaults.tau)


def make_attack_node(combo: Combo) -> AttackNode:
    """The node function that runs every attack on one combination's victim."""
    return AttackNode(combo)


def build_reports(
    mia: MiaEvaluationSettings, *results: dict[str, Any]
) -> tuple[pd.DataFrame, str, pd.DataFrame, Figure, Figure, Figure]:
    """The comparison table (CSV and Markdown), the time-cost table, the privacy–utility
    scatter, the victim ROC curves per defense (FPR axis from 1/n_nonmembers) and the chosen
    attack's exposure of high- versus low-memorisation members per defense."""
    table = comparison_table(results)
    return (
        table,
        comparison_markdown(table, mia.attacks),
        time_cost_table(table),
        plot_privacy_utility(table),
        plot_roc_curves(roc_curves_by_combination(results), roc_floors(results)),
        plot_memorisation_slices(table),
    )
