"""data_ingestion: raw files → dataset_arrays, dataset_info → splits."""

from kedro.pipeline import Node, Pipeline

from wemem.pipelines.repeats import per_seed

from .nodes import load_raw_dataset, split_dataset


def create_pipeline(**kwargs) -> Pipeline:
    load = Pipeline([
        Node(
            load_raw_dataset,
            ["params:dataset", "params:dataset_settings", "params:data_ingestion"],
            ["dataset_arrays", "dataset_info"],
            name="load_raw_dataset",
        ),
    ])
    split = Pipeline([
        Node(
            split_dataset,
            ["dataset_arrays", "dataset_info", "params:dataset_settings", "params:data_ingestion", "params:seed"],
            ["splits", "split_sizes"],
            name="split_dataset",
        ),
    ])
    return load + per_seed(split)  # the raw data is shared; the splits are made once per repeat
