"""memscore: shards of the Feldman–Zhang estimator (or an imported CSV) → memscores."""

from kedro.pipeline import Node, Pipeline

from wemem import structure
from wemem.pipelines.repeats import per_seed

from .nodes import import_memscores, make_shard_node, merge_memscore_shards, summarise_memscores


def create_pipeline(**kwargs) -> Pipeline:
    shape = structure.current()
    if shape.import_csv:
        produce = [
            Node(import_memscores, ["dataset_arrays", "splits", "params:memscore"], "memscores", name="import_memscores")
        ]
    else:
        shard_inputs = ["dataset_arrays", "splits", "dataset_info", "params:dataset_settings", "params:memscore",
                        "params:seed", "params:device", "params:progress"]
        shards = [
            Node(make_shard_node(k, shape.n_shards), shard_inputs, f"memscore_shard_{k}", name=f"memscore_shard_{k}")
            for k in range(shape.n_shards)
        ]
        produce = [
            *shards,
            Node(
                merge_memscore_shards,
                ["dataset_arrays", "splits", *[f"memscore_shard_{k}" for k in range(shape.n_shards)]],
                "memscores",
                name="merge_memscore_shards",
            ),
        ]
    return per_seed(Pipeline(
        [
            *produce,
            Node(
                summarise_memscores,
                ["memscores", "dataset_info", "params:dataset_settings", "params:memscore"],
                ["memscore_summary", "memscore_distribution_plot"],
                name="summarise_memscores",
            ),
        ]
    ))
