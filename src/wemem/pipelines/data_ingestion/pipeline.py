"""data_ingestion: raw files → dataset_arrays, dataset_info → splits."""

from kedro.pipeline import Node, Pipeline

from .nodes import load_raw_dataset, split_dataset


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                load_raw_dataset,
                ["params:dataset", "params:dataset_settings", "params:data_ingestion"],
                ["dataset_arrays", "dataset_info"],
                name="load_raw_dataset",
            ),
            Node(
                split_dataset,
                ["dataset_arrays", "dataset_info", "params:dataset_settings", "params:data_ingestion", "params:seed"],
                ["splits", "split_sizes"],
                name="split_dataset",
            ),
        ]
    )
