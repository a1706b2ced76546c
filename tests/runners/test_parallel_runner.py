"""Kedro's ParallelRunner on the project's data_ingestion + memscore slice: spawned worker
processes with one torch thread each give exactly what SequentialRunner gives.

ParallelRunner pickles every node with the standard pickler, so node functions must be
module-level objects: the memscore shard nodes are instances of ``ShardNode``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from kedro.runner import ParallelRunner, SequentialRunner

from tests.runners import assert_same_results, make_project, results, run_project
from wemem.pipelines.memscore.nodes import make_shard_node


@pytest.fixture(scope="module")
def sequential_project(tmp_path_factory, env, one_thread) -> Path:
    """The slice run sequentially with one torch thread, like each parallel worker."""
    project = make_project(tmp_path_factory.mktemp("sequential") / "proj")
    run_project(project, SequentialRunner())
    return project


def test_shard_nodes_pickle_with_the_standard_pickler():
    node = pickle.loads(pickle.dumps(make_shard_node(1, 2)))
    assert (node.shard, node.n_shards, node.__name__) == (1, 2, "estimate_memscore_shard_1")


def test_parallel_runner_on_the_project_nodes_equals_sequential(sequential_project, tmp_path):
    project = make_project(tmp_path / "proj")
    outputs = run_project(project, ParallelRunner(max_workers=2))
    assert set(outputs) == {"split_sizes", "memscore_summary", "memscore_distribution_plot"}
    assert_same_results(results(sequential_project), results(project))
