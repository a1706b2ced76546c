"""mia_evaluation: per combination, model outputs → ten adaptive attacks; then the reports."""

import warnings

from kedro.pipeline import Node, Pipeline

from wemem import structure
from wemem.ml.grid import Combo
from wemem.pipelines.repeats import per_seed, seeded_names

from .nodes import build_reports, compute_model_outputs, make_attack_node

SHARED_INPUTS = {"dataset_arrays", "splits", "rankings", "dataset_info"}
SHARED_PARAMS = {"params:dataset_settings", "params:mia_evaluation", "params:seed", "params:device"}


def combo_pipeline(combo: Combo) -> Pipeline:
    """The namespaced evaluation of one combination (same namespace as its pruning)."""
    models, log = ("original_models", "training_log") if combo.method is None else ("pruned_models", "finetune_log")
    inputs = SHARED_INPUTS | ({models, log} if combo.method is None else set())
    nodes = [
        Node(
            compute_model_outputs,
            [models, "dataset_arrays", "splits", "rankings", "dataset_info", "params:dataset_settings",
             "params:mia_evaluation",
             "params:seed", "params:device"],
            "model_outputs",
            name=f"{combo.label}.compute_model_outputs",  # kedro-viz's label names the combination
        ),
        Node(
            make_attack_node(combo),
            ["model_outputs", log, "dataset_info", "params:dataset_settings", "params:mia_evaluation", "params:seed",
             "params:device"],
            "attack_results",
            name=f"{combo.label}.run_membership_attacks",
        ),
    ]
    return Pipeline(nodes, namespace=combo.namespace, inputs=inputs, parameters=SHARED_PARAMS)


def create_pipeline(**kwargs) -> Pipeline:
    shape = structure.current()
    combos = per_seed(sum((combo_pipeline(c) for c in shape.combos), Pipeline([])))
    with warnings.catch_warnings():
        # the report node reads each namespace's results by its full dotted name, on purpose
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        report_node = Node(
            build_reports,
            ["params:mia_evaluation",
             *[name for c in shape.combos for name in seeded_names(f"{c.namespace}.attack_results")]],
            "reports",
            name="build_reports",
        )
    return combos + Pipeline([report_node])
