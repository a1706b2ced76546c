"""pruning_defense: train victim and shadows, then one namespace per (method × sparsity ×
defense) that prunes and fine-tunes all of them the same way."""

from kedro.pipeline import Node, Pipeline

from wemem import structure

from .nodes import make_prune_node, train_original_models

SHARED_INPUTS = {"original_models", "dataset_arrays", "splits", "rankings", "dataset_info"}
SHARED_PARAMS = {"params:pruning_defense", "params:defenses", "params:seed", "params:device", "params:progress"}


def combo_pipeline(combo: structure.Combo) -> Pipeline:
    """The namespaced pipeline of one combination."""
    node = Node(
        make_prune_node(combo),
        ["original_models", "dataset_arrays", "splits", "rankings", "dataset_info",
         "params:pruning_defense", "params:defenses", "params:seed", "params:device", "params:progress"],
        ["pruned_models", "finetune_log"],
        name="prune_and_defend",
    )
    return Pipeline([node], namespace=combo.namespace, inputs=SHARED_INPUTS, parameters=SHARED_PARAMS)


def create_pipeline(**kwargs) -> Pipeline:
    shape = structure.current()
    train = Pipeline([
        Node(
            train_original_models,
            ["dataset_arrays", "splits", "dataset_info", "params:training", "params:seed", "params:device", "params:progress"],
            ["original_models", "training_log"],
            name="train_original_models",
        )
    ])
    combos = [combo_pipeline(c) for c in shape.combos if c.method is not None]
    return sum(combos, train)
