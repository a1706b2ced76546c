"""ranking: memscores → per-class rankings → window preview."""

from kedro.pipeline import Node, Pipeline

from wemem.pipelines.repeats import per_seed

from .nodes import preview_windows, rank_memscores


def create_pipeline(**kwargs) -> Pipeline:
    return per_seed(Pipeline(
        [
            Node(rank_memscores, "memscores", "rankings", name="rank_memscores"),
            Node(
                preview_windows,
                ["rankings", "params:dataset_settings", "params:ranking"],
                "window_preview",
                name="preview_windows",
            ),
        ]
    ))
