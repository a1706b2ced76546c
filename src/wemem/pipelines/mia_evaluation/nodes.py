"""Nodes of the mia_evaluation pipeline: short adapters over :mod:`wemem.ml.evaluation` (model
outputs, the attacks on one combination) and :mod:`wemem.ml.reporting` (the reports)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from wemem.ml.aggregate import comparison_agg_markdown, comparison_aggregate
from wemem.ml.evaluation import MiaEvaluationSettings, attack_record, model_outputs
from wemem.ml.grid import Combo
from wemem.ml.report_html import answer, render_report, run_settings, software_versions
from wemem.ml.reporting import (
    chosen_roc_by_combination,
    comparison_markdown,
    comparison_table,
    plot_chosen_roc,
    plot_memorisation_slices,
    plot_privacy_utility,
    time_cost_table,
)
from wemem.ml.experiment_tables import experiment_table
from wemem.ml.select import select_defenses, selection_markdown
from wemem.params import DatasetSettings
from wemem.pipelines.isolation import failed_outputs, log_failure, outputs_error
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
    memorisation scores of the victim's members (from the h2l rankings); on an exception, outputs
    that record the combination as failed (see :mod:`wemem.pipelines.isolation`)."""
    try:
        return model_outputs(models, arrays, splits, info, dataset.model, mia.settings_of("samia"), seed, device,
                             memscores=rankings)
    except Exception as exc:  # noqa: BLE001 - one combination's failure never stops the others
        namespace = models.get("meta", {}).get("namespace", "unpruned")
        return failed_outputs(log_failure(namespace, "model outputs", exc))


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
        """The combination's attack record (see :func:`wemem.ml.evaluation.attack_record`); a
        failure upstream or in the attacks gives a record with ``status: failed`` and the error."""
        def record(outputs: dict[str, np.ndarray], log: dict[str, Any]) -> dict[str, Any]:
            return attack_record(self.combo, outputs, log, dataset=info["name"], model=dataset.model,
                                 settings=mia, seed=seed, device=device, tau=dataset.defense_defaults.tau,
                                 tau_mode=dataset.defense_defaults.tau_mode)

        def failed(error: str) -> dict[str, Any]:
            meta = {**finetune_log.get("meta", {}), "status": "failed", "error": error}
            return record(failed_outputs(error), {**finetune_log, "meta": meta})

        upstream = outputs_error(outputs)
        if upstream is not None and finetune_log.get("meta", {}).get("status", "ok") == "ok":
            return failed(upstream)
        try:
            return record(outputs, finetune_log)
        except Exception as exc:  # noqa: BLE001 - one combination's failure never stops the others
            return failed(log_failure(self.combo.namespace, "attacks", exc))


def make_attack_node(combo: Combo) -> AttackNode:
    """The node function that runs every attack on one combination's victim."""
    return AttackNode(combo)


def build_reports(mia: MiaEvaluationSettings, *results: dict[str, Any]) -> dict[str, Any]:
    """The run's reports, saved as one unit (``reports``, a ReportSetDataset): the comparison
    table (CSV and Markdown), the time-cost table, the privacy–utility scatter, the victim ROC of
    the chosen attack per defense (log-log, FPR axis from 1/n_nonmembers), the chosen attack's
    exposure of high- versus low-memorisation members per defense, all of it on one HTML page that
    leads with the answer (the best defense within ``mia_evaluation.report.max_acc_drop``), the
    select step's choice (JSON and Markdown, :mod:`wemem.ml.select`) and the table in the paper's
    layout ``mia.experiment_table`` (:mod:`wemem.ml.experiment_tables`). Failed combinations are
    rows with ``status: failed`` and their error. The comparison table has one row per
    (combination, seed); ``defense_comparison_agg`` (CSV and Markdown) aggregates each combination
    over the seeds (mean, std, 95% interval: :func:`wemem.ml.aggregate.aggregate_seeds`) and gives
    each combination's difference to Base paired by seed (:func:`wemem.ml.aggregate.paired_deltas`); with
    several seeds the scatter draws the means with ± std error bars."""
    table = comparison_table(results)
    agg = comparison_aggregate(table, "base")
    selection = select_defenses(table, mia.select)
    time_cost = time_cost_table(table)
    privacy_utility = plot_privacy_utility(table)
    roc = plot_chosen_roc(chosen_roc_by_combination(results))
    slices = plot_memorisation_slices(table)
    page = render_report(
        table, answer(table, mia.report.max_acc_drop),
        {"privacy-utility": ("Privacy–utility trade-off: test accuracy against the chosen attack's accuracy "
                             "(hollow: max over attacks); dashed: the Pareto frontier", privacy_utility),
         "roc": ("Victim ROC of the chosen attack per defense (log-log)", roc),
         "memorisation": ("Chosen attack's TPR on high- vs low-memorisation members", slices)},
        time_cost=time_cost, settings=run_settings(table, mia.as_dict()), versions=software_versions(),
        selection=selection)
    return {
        "selection": selection,
        "selection_md": selection_markdown(selection),
        "experiment_table_md": experiment_table(table, mia.experiment_table, mia.attacks),
        "defense_comparison": table,
        "defense_comparison_md": comparison_markdown(table, mia.attacks),
        "defense_comparison_agg": agg,
        "defense_comparison_agg_md": comparison_agg_markdown(agg, mia.attacks),
        "time_cost": time_cost,
        "privacy_utility_plot": privacy_utility,
        "roc_curves_plot": roc,
        "memorisation_slices_plot": slices,
        "report_html": page,
    }
