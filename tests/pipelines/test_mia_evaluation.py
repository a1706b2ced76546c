"""mia_evaluation nodes receive typed settings: Kedro turns ``params:mia_evaluation`` and
``params:dataset_settings`` into their schemas (no node re-parses a dict)."""

from __future__ import annotations

import logging

from kedro.validation.type_extractor import TypeExtractor

from wemem.ml.evaluation import MiaEvaluationSettings
from wemem.params import DatasetSettings
from wemem.pipeline_registry import register_pipelines


def test_mia_nodes_take_typed_settings_without_conflicts(caplog):
    pipelines = register_pipelines()
    with caplog.at_level(logging.WARNING, logger="kedro.validation.type_extractor"):
        types = TypeExtractor({"mia_evaluation": pipelines["mia_evaluation"]}).extract_types_from_pipelines()
        TypeExtractor(pipelines).extract_types_from_pipelines()
    assert types["mia_evaluation"] is MiaEvaluationSettings
    assert types["dataset_settings"] is DatasetSettings
    assert not [r for r in caplog.records if "Conflicting" in r.getMessage()]
