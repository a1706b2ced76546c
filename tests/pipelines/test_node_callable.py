"""Node functions that are instances (shard, prune and attack nodes) read like functions to
Kedro's parameter-type extraction and survive pickling (process-based runners)."""

from __future__ import annotations

import inspect
import logging
import pickle

from kedro.validation.type_extractor import TypeExtractor

from wemem.pipeline_registry import register_pipelines
from wemem.pipelines.memscore.nodes import ShardNode
from wemem.pipelines.mia_evaluation.nodes import AttackNode
from wemem.pipelines.pruning_defense.nodes import PruneNode
from wemem.ml.grid import Combo


def test_kedro_type_extraction_reads_every_node_without_warnings(caplog):
    pipelines = register_pipelines()
    instance_nodes = [n for n in pipelines["__default__"].nodes if not inspect.isfunction(n.func)]
    assert len(instance_nodes) >= 3  # shards, prune and attack nodes are instances
    with caplog.at_level(logging.WARNING, logger="kedro.validation.type_extractor"):
        TypeExtractor(pipelines).extract_types_from_pipelines()
    assert not [r for r in caplog.records if "Could not extract type hints" in r.getMessage()]


def test_node_callables_keep_name_signature_and_pickle():
    combo = Combo("l1_unstructured", 0.6, "rsw")
    for node_fn, name, first in (
        (ShardNode(1, 3), "estimate_memscore_shard_1", "arrays"),
        (PruneNode(combo), "prune_and_defend_l1_unstructured_s60_rsw", "original_models"),
        (AttackNode(combo), "run_membership_attacks_l1_unstructured_s60_rsw", "outputs"),
    ):
        assert node_fn.__name__ == name
        params = list(inspect.signature(node_fn).parameters)
        assert params[0] == first  # no `self`: Kedro maps inputs to arguments by position
        assert "return" in node_fn.__annotations__ and first in node_fn.__annotations__
        clone = pickle.loads(pickle.dumps(node_fn))
        assert clone.__name__ == name and clone.__annotations__ == node_fn.__annotations__
