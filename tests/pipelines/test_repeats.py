"""Repeats over seeds (``repeats.seeds``): which nodes and datasets exist, where they are stored,
that every node of a repeat uses that repeat's seed, and the parameter checks."""

from __future__ import annotations

import copy
import inspect
import logging
import pickle
import typing

import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from kedro.validation.type_extractor import TypeExtractor

from tests.conftest import REPO
from wemem import structure
from wemem.config import CONFIG_LOADER_ARGS
from wemem.ml.grid import seed_namespace, seeds_from
from wemem.params import ParameterError, validate_parameters
from wemem.pipeline_registry import register_pipelines
from wemem.pipelines.repeats import SeededNode, per_seed

# nodes that read params:seed without repeats (the chain from the splits on)
SEEDED = {"split_dataset", "memscore_shard_0", "memscore_shard_1", "train_original_models",
          "compute_model_outputs", "run_membership_attacks", "prune_and_defend"}


def _loader(env: str | None = None) -> OmegaConfigLoader:
    return OmegaConfigLoader(conf_source=str(REPO / "conf"), env=env, **CONFIG_LOADER_ARGS)


@pytest.fixture
def with_params():
    """Builds the pipelines from given parameters; restores the structure module afterwards."""
    saved = structure._config_loader, structure._built_for
    base = dict(_loader()["parameters"])

    def build(**overrides):
        params = copy.deepcopy(base)
        params.update(overrides)
        structure._config_loader = {"parameters": params}
        return register_pipelines()

    yield build
    structure._config_loader, structure._built_for = saved


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def test_without_repeats_the_graph_is_the_one_of_a_single_run(with_params):
    # what it catches: seeds: null (the default) renaming any node or dataset, or dropping params:seed
    default = with_params()["__default__"]
    none = with_params(repeats={"seeds": None})["__default__"]
    assert {n.name for n in default.nodes} == {n.name for n in none.nodes}
    assert default.datasets() == none.datasets()
    assert not [n.name for n in default.nodes if n.name.startswith("seed")]
    assert {"splits", "memscores", "rankings", "original_models", "unpruned.attack_results",
            "l1_unstructured_s60.rsw.pruned_models"} <= default.datasets()
    readers = {_short(n.name) for n in default.nodes if "params:seed" in n.inputs}
    assert readers == SEEDED
    assert not [n for n in default.nodes if isinstance(n.func, SeededNode)]


def test_each_seed_runs_the_whole_chain_in_its_namespace(with_params):
    # what it catches: a node of a repeat left reading the top-level seed, a repeat sharing a
    # dataset it must own, or the report missing some (combination, seed)
    single = with_params()["__default__"]
    pipelines = with_params(repeats={"seeds": [7, 8]})
    repeated = pipelines["__default__"]
    shared = {"load_raw_dataset", "build_reports"}
    per_repeat = [n for n in single.nodes if n.name not in shared]
    assert len(repeated.nodes) == len(shared) + 2 * len(per_repeat)
    assert not [n.name for n in repeated.nodes if "params:seed" in n.inputs]
    for node in repeated.nodes:
        if node.name in shared:
            continue
        ns, _, rest = node.name.partition(".")
        assert ns in ("seed7", "seed8"), node.name
        seed = int(ns[4:])
        if _short(node.name) in SEEDED:
            assert isinstance(node.func, SeededNode) and node.func.seed == seed, node.name
        for name in [*node.inputs, *node.outputs]:
            if not name.startswith("params:"):
                assert name in ("dataset_arrays", "dataset_info") or name.startswith(f"{ns}."), (node.name, name)
    report = next(n for n in repeated.nodes if n.name == "build_reports")
    single_report = next(n for n in single.nodes if n.name == "build_reports")
    expected = [f"{seed_namespace(s)}.{name}" for name in single_report.inputs[1:] for s in (7, 8)]
    assert report.inputs == ["params:mia_evaluation", *expected]
    # each registered pipeline on its own is repeated too (e.g. --pipelines memscore)
    memscore = pipelines["memscore"]
    assert {n.name for n in memscore.nodes} == {f"seed{s}.{n}" for s in (7, 8) for n in
                                                ("memscore_shard_0", "memscore_shard_1", "merge_memscore_shards",
                                                 "summarise_memscores")}
    assert memscore.inputs() >= {"dataset_arrays", "seed7.splits", "seed8.splits"}


def test_repeated_nodes_keep_typed_parameters(with_params, caplog):
    # what it catches: a SeededNode hiding the wrapped function's signature or type hints from
    # Kedro (typed settings would arrive as dicts, with a warning per node)
    pipelines = with_params(repeats={"seeds": [1, 2]})
    with caplog.at_level(logging.WARNING, logger="kedro.validation.type_extractor"):
        types = TypeExtractor(pipelines).extract_types_from_pipelines()
    assert not [r for r in caplog.records if "Could not extract" in r.getMessage() or "Conflicting" in r.getMessage()]
    assert types["dataset_settings"].__name__ == "DatasetSettings"


def _split(labels, dataset, ingestion, seed):
    return ("split", labels, seed)


def test_seeded_node_inserts_its_seed_and_pickles():
    # what it catches: the seed inserted at the wrong place, or a node function that a
    # process-based runner cannot pickle
    fn = SeededNode(_split, 43, 3)
    assert fn("x", "d", "i") == ("split", "x", 43)
    assert fn.__name__ == "_split"
    assert list(inspect.signature(fn).parameters) == ["labels", "dataset", "ingestion"]
    clone = pickle.loads(pickle.dumps(fn))
    assert clone("a", 1, 2) == ("split", "a", 43) and clone.seed == 43
    assert list(inspect.signature(clone).parameters) == ["labels", "dataset", "ingestion"]

    def typed(a: int, seed: int, b: str) -> str:
        return f"{a}-{seed}-{b}"

    fn = SeededNode(typed, 5, 1)
    assert fn(1, "z") == "1-5-z"
    assert typing.get_type_hints(fn) == {"a": int, "b": str, "return": str}


@pytest.mark.parametrize("name, path", [
    ("seed43.splits", "data/02_intermediate/mnist1d/seed43/splits.npz"),
    ("seed43.split_sizes", "data/08_reporting/mnist1d/seed43/split_sizes.json"),
    ("seed43.memscore_shard_1", "data/03_primary/mnist1d/seed43/memscore_shards/shard_1.npz"),
    ("seed43.memscores", "data/03_primary/mnist1d/seed43/memscores.csv"),
    ("seed43.rankings", "data/04_feature/mnist1d/seed43/rankings.csv"),
    ("seed43.original_models", "data/06_models/mnist1d/seed43/original_models.pt"),
    ("seed43.training_log", "data/06_models/mnist1d/seed43/training_log.json"),
    ("seed43.l1_unstructured_s60.rsw.pruned_models", "data/06_models/mnist1d/seed43/l1_unstructured_s60/rsw/pruned_models.pt"),
    ("seed43.l1_unstructured_s60.rsw.finetune_log", "data/06_models/mnist1d/seed43/l1_unstructured_s60/rsw/finetune_log.json"),
    ("seed43.unpruned.model_outputs", "data/07_model_output/mnist1d/seed43/unpruned/model_outputs.npz"),
    ("seed43.l1_unstructured_s60.rsw.attack_results",
     "data/07_model_output/mnist1d/seed43/l1_unstructured_s60.rsw/attack_results.json"),
    # without repeats, today's paths
    ("splits", "data/02_intermediate/mnist1d/splits.npz"),
    ("memscore_shard_1", "data/03_primary/mnist1d/memscore_shards/shard_1.npz"),
    ("l1_unstructured_s60.rsw.pruned_models", "data/06_models/mnist1d/l1_unstructured_s60/rsw/pruned_models.pt"),
    ("unpruned.attack_results", "data/07_model_output/mnist1d/unpruned/attack_results.json"),
])
def test_catalog_stores_each_repeat_under_its_seed(name, path):
    # what it catches: a repeat's dataset falling back to a pattern without the seed, so two
    # repeats would write the same file
    conf = {k: v for k, v in _loader()["catalog"].items() if not k.startswith("_")}
    dataset = DataCatalog.from_config(conf).get(name)
    assert str(dataset._filepath).replace("\\", "/").endswith(path)


def test_attack_results_of_every_repeat_are_mlflow_child_runs():
    conf = {k: v for k, v in _loader()["catalog"].items() if not k.startswith("_")}
    dataset = DataCatalog.from_config(conf).get("seed7.unpruned.attack_results")
    assert dataset.metadata["wemem"] == {"mlflow": "child_run"}


def test_repeats_environment_names_three_seeds():
    params = dict(_loader("repeats3")["parameters"])
    validate_parameters(params)
    assert seeds_from(params["repeats"]) == (42, 43, 44)
    assert seeds_from(dict(_loader()["parameters"])["repeats"]) is None


@pytest.mark.parametrize("seeds, message", [
    ([], "repeats.seeds = []: an empty list runs nothing"),
    ([1, 2, 1], "repeats.seeds[2] = 1: repeats an earlier seed (same namespace); allowed: distinct seeds"),
    ([1, -3], "repeats.seeds[1] = -3"),
    ("42", "repeats.seeds = '42'"),
])
def test_bad_seeds_are_refused_by_name(seeds, message):
    params = dict(_loader()["parameters"])
    params["repeats"] = {"seeds": seeds}
    with pytest.raises(ParameterError) as err:
        validate_parameters(params)
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


def test_unknown_repeats_key_is_refused():
    params = dict(_loader()["parameters"])
    params["repeats"] = {"seed": [1, 2]}
    with pytest.raises(ParameterError, match="repeats.seed = .*unknown key 'seed'.*did you mean 'seeds'"):
        validate_parameters(params)


def test_per_seed_leaves_a_pipeline_alone_without_seeds(with_params):
    pipe = with_params()["ranking"]
    assert per_seed(pipe, None) is pipe
