"""Project pipelines: the five WeMem pipelines, and all of them in order as the default."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from wemem import structure
from wemem.pipelines import data_ingestion, memscore, mia_evaluation, pruning_defense, ranking


def register_pipelines() -> dict[str, Pipeline]:
    """Registers ``data_ingestion``, ``memscore``, ``ranking``, ``pruning_defense`` and
    ``mia_evaluation``; ``__default__`` runs all five end to end."""
    pipelines = {
        "data_ingestion": data_ingestion.create_pipeline(),
        "memscore": memscore.create_pipeline(),
        "ranking": ranking.create_pipeline(),
        "pruning_defense": pruning_defense.create_pipeline(),
        "mia_evaluation": mia_evaluation.create_pipeline(),
    }
    structure.mark_built(structure.current())
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
