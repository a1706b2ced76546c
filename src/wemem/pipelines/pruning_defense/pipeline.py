"""pruning_defense: train victim and shadows, then one namespace per (method × sparsity ×
defense) that prunes and fine-tunes all of them the same way."""

from kedro.pipeline import Node, Pipeline

from wemem import structure
from wemem.ml.grid import Combo
from wemem.pipelines.repeats import per_seed

from .nodes import PruneNode, train_original_models

SHARED_INPUTS = {"original_models", "dataset_arrays", "splits", "rankings", "dataset_info"}
RUN_PARAMS = ["params:seed", "params:device", "params:progress"]


def combo_pipeline(combo: Combo) -> Pipeline:
    """The namespaced pipeline of one combination."""
    variant = f"params:defenses.{combo.defense_variant}"
    node = Node(
        PruneNode(combo),
        ["original_models", "dataset_arrays", "splits", "rankings", "dataset_info", "params:dataset_settings",
         variant, "params:pruning_defense.n_iter", "params:pruning_defense.finetune", *RUN_PARAMS],
        ["pruned_models", "finetune_log"],
        name=f"{combo.label}.prune_and_defend",  # the label kedro-viz shows names the combination
    )
    params = {"params:dataset_settings", variant, "params:pruning_defense.n_iter", "params:pruning_defense.finetune",
              *RUN_PARAMS}
    return Pipeline([node], namespace=combo.namespace, inputs=SHARED_INPUTS, parameters=params)


def create_pipeline(**kwargs) -> Pipeline:
    train = Pipeline([
        Node(
            train_original_models,
            ["dataset_arrays", "splits", "dataset_info", "params:dataset_settings", "params:training", *RUN_PARAMS],
            ["original_models", "training_log"],
            name="train_original_models",
        )
    ])
    combos = [combo_pipeline(c) for c in structure.current().combos if c.method is not None]
    return per_seed(sum(combos, train))
