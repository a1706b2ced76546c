"""DaskRunner: the project's data_ingestion + memscore slice gives on a Dask LocalCluster
(127.0.0.1, 2 worker processes) exactly what SequentialRunner gives, through the session and
the ``kedro run`` CLI; in-memory data, errors, hooks, MLflow and the settings, on tiny pipelines.

Everything listens on 127.0.0.1 only. The whole file takes about a minute on 2 cores.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner

from tests.conftest import in_project, project_env
from tests.runners import SLICE, assert_same_results, make_project, results, run_project
from wemem.runners import DaskRunner
from wemem.runners.dask_runner import ADDRESS_ENV, _resources_for, local_cluster

QUIET_ENV = {"DO_NOT_TRACK": "1", "KEDRO_DISABLE_TELEMETRY": "1", "WEMEM_MLFLOW_DISABLE": "1"}


@pytest.fixture(scope="module", autouse=True)
def quiet_env():
    with pytest.MonkeyPatch.context() as mp:
        for key, value in QUIET_ENV.items():
            mp.setenv(key, value)
        yield


@pytest.fixture(scope="module")
def dask_copy(tmp_path_factory) -> Path:
    """The project copy that the cluster's workers work in."""
    return make_project(tmp_path_factory.mktemp("dask") / "proj")


@pytest.fixture(scope="module")
def cluster(quiet_env, dask_copy):
    """Two single-threaded worker processes on 127.0.0.1 (OMP_NUM_THREADS=1 in each), started from
    inside ``dask_copy``: a worker keeps the working directory it was started in, and nodes read
    relative parameters such as ``data_ingestion.raw_root`` against it, not the project path."""
    with contextlib.ExitStack() as stack:
        with in_project(dask_copy):
            local = stack.enter_context(local_cluster(n_workers=2))
        yield local


@pytest.fixture(scope="module")
def sequential_project(tmp_path_factory, one_thread) -> Path:
    project = make_project(tmp_path_factory.mktemp("sequential") / "proj")
    run_project(project, SequentialRunner())
    return project


@pytest.fixture(scope="module")
def dask_project(dask_copy, cluster) -> tuple[Path, dict]:
    outputs = run_project(dask_copy, DaskRunner(address=cluster.scheduler_address))
    return dask_copy, outputs


# ------------------------------------------------------------------ the project's slice
def test_project_slice_on_cluster_equals_sequential(sequential_project, dask_project):
    project, outputs = dask_project
    assert set(outputs) == {"split_sizes", "memscore_summary", "memscore_distribution_plot"}
    ran = results(project)
    assert set(ran["shards"]) == {"shard_0", "shard_1"}
    assert len(ran["memscores"]) > 0
    assert_same_results(results(sequential_project), ran)


def test_cli_only_missing_outputs_reruns_just_the_missing_shard(dask_project, cluster):
    """``kedro run --runner=wemem.runners.DaskRunner --runner-params address=... --only-missing-outputs``
    after a shard file is deleted: only that shard runs again (Kedro runs a node when one of its
    own outputs is missing; the merge's output still exists) and it comes out the same."""
    project, _ = dask_project
    before = results(project)
    shards = project / "data" / "03_primary" / "mnist1d" / "memscore_shards"
    kept_mtime = (shards / "shard_0.npz").stat().st_mtime_ns
    (shards / "shard_1.npz").unlink()
    versions = project / "data" / "03_primary" / "mnist1d" / "memscores.csv"
    n_versions = len(list(versions.iterdir()))
    params = "memscore.m=4,memscore.epochs=2,memscore.n_shards=2,progress=false,datasets.mnist1d.loader.num_samples=600"
    cmd = [str(Path(sys.executable).with_name("kedro")), "run", "--pipelines", ",".join(SLICE),
           "--runner", "wemem.runners.DaskRunner", "--runner-params", f"address={cluster.scheduler_address}",
           "--only-missing-outputs", "--params", params]
    done = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=540,
                          env=project_env(COLUMNS="200"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = " ".join((done.stdout + done.stderr).split())  # rich wraps long lines
    assert "Running 1 out of 6 nodes" in log
    assert "Completed node: memscore_shard_1" in log  # the driver logs what its workers ran
    assert (shards / "shard_0.npz").stat().st_mtime_ns == kept_mtime
    assert len(list(versions.iterdir())) == n_versions
    assert_same_results(before, results(project))


# ------------------------------------------------------------------ tiny pipelines
def _one() -> int:
    return 1


def _add(x: int, y: int) -> int:
    return x + y


def _times(x: int, k: int) -> list[int]:
    return [x] * k


def _concat(a: list[int], b: int) -> dict:
    return {"a": a, "b": b}


def _tiny() -> tuple[Pipeline, DataCatalog]:
    pipeline = Pipeline([
        Node(_one, None, "one", name="one"),                   # in memory, read by two nodes
        Node(_add, ["one", "params:k"], "plus_k", name="plus_k"),
        Node(_times, ["one", "params:k"], "repeated", name="repeated"),
        Node(_concat, ["repeated", "plus_k"], "result", name="concat"),  # a free output
    ])
    return pipeline, DataCatalog({"params:k": MemoryDataset(3)})


def test_in_memory_data_reaches_the_next_node_and_free_outputs_come_back(cluster):
    pipeline, catalog = _tiny()
    expected = SequentialRunner().run(pipeline, _tiny()[1])["result"].load()
    out = DaskRunner(address=cluster.scheduler_address).run(pipeline, catalog)
    assert set(out) == {"result"}
    assert out["result"].load() == expected == {"a": [1, 1, 1], "b": 4}


def _boom(x: int) -> int:
    raise ValueError(f"boom {x}")


def test_a_node_error_reaches_the_driver(cluster, caplog):
    pipeline = Pipeline([Node(_one, None, "one", name="one"), Node(_boom, "one", "never", name="boom")])
    with pytest.raises(ValueError, match="boom 1"):
        DaskRunner(address=cluster.scheduler_address).run(pipeline, DataCatalog())
    assert "--from-nodes" in caplog.text  # the resume hint of Kedro's runners


def _worker_view() -> dict:
    from kedro.framework.project import PACKAGE_NAME

    from wemem.runners import dask_runner

    manager = dask_runner._worker_hooks[PACKAGE_NAME]
    return {
        "pid": os.getpid(),
        "package": PACKAGE_NAME,
        "hooks": sorted(type(p).__name__ for p in manager.get_plugins()),
        "mlflow_parent": os.environ.get("WEMEM_MLFLOW_PARENT_RUN_ID"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "malloc_trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
    }


def test_project_hooks_and_mlflow_environment_on_the_workers(cluster, monkeypatch):
    from kedro.framework.project import configure_project

    configure_project("wemem")
    monkeypatch.setenv("WEMEM_MLFLOW_PARENT_RUN_ID", "parent-123")
    out = DaskRunner(address=cluster.scheduler_address).run(
        Pipeline([Node(_worker_view, None, "view", name="view")]), DataCatalog())
    view = out["view"].load()
    assert view["pid"] != os.getpid()
    assert view["package"] == "wemem"
    assert "ValidationHook" in view["hooks"]  # built from wemem.settings.HOOKS on the worker
    assert view["mlflow_parent"] == "parent-123"
    assert view["omp"] == "1"
    assert view["malloc_trim"] is None  # see local_cluster: Dask's 65536 doubles torch's CPU time


def test_local_cluster_leaves_this_process_environment_alone():
    before = dict(os.environ)
    with local_cluster(n_workers=1) as local:
        assert local.scheduler_address.startswith("tcp://127.0.0.1:")
        assert dict(os.environ) == before


def _log_metric() -> dict:
    import mlflow

    mlflow.log_metric("from_worker", 7.0)
    return {"uri": os.environ["MLFLOW_TRACKING_URI"], "run_id": mlflow.active_run().info.run_id}


def test_metrics_logged_on_a_worker_land_in_the_drivers_active_run(cluster, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run() as run:
            out = DaskRunner(address=cluster.scheduler_address).run(
                Pipeline([Node(_log_metric, None, "seen", name="log_metric")]), DataCatalog())
            during = mlflow.get_run(run.info.run_id)
        after = mlflow.get_run(run.info.run_id)
    finally:
        mlflow.set_tracking_uri(None)
    assert out["seen"].load() == {"uri": uri, "run_id": run.info.run_id}
    assert during.data.metrics == {"from_worker": 7.0}
    assert during.info.status == "RUNNING"  # the worker detached; the driver ended the run
    assert after.info.status == "FINISHED"


def _where() -> str:
    from distributed import get_worker

    return get_worker().address


def test_without_address_a_local_cluster_on_loopback(monkeypatch):
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    runner = DaskRunner(cluster_args={"n_workers": 1})
    assert runner.settings()["address"] is None
    out = runner.run(Pipeline([Node(_where, None, "where", name="where")]), DataCatalog())
    assert out["where"].load().startswith("tcp://127.0.0.1:")


# ------------------------------------------------------------------ settings
def test_address_precedence(monkeypatch):
    catalog = {"address": "tcp://127.0.0.1:3", "cluster": {"n_workers": 5}}  # conf/<env>/runner.yml's dask block
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    assert DaskRunner().settings(catalog)["address"] == "tcp://127.0.0.1:3"
    monkeypatch.setenv(ADDRESS_ENV, "tcp://127.0.0.1:2")
    assert DaskRunner().settings(catalog)["address"] == "tcp://127.0.0.1:2"
    assert DaskRunner(address="tcp://127.0.0.1:1").settings(catalog)["address"] == "tcp://127.0.0.1:1"
    monkeypatch.delenv(ADDRESS_ENV)
    defaults = DaskRunner().settings({})
    assert defaults["address"] is None
    assert defaults["cluster"]["n_workers"] == (os.cpu_count() or 1)
    assert defaults["cluster"]["threads_per_worker"] == 1
    assert DaskRunner().settings(catalog)["cluster"]["n_workers"] == 5
    assert DaskRunner(cluster_args={"n_workers": 2}).settings(catalog)["cluster"]["n_workers"] == 2


def test_shipped_runner_config_holds_a_dask_block_and_parameters_do_not():
    from kedro.config import OmegaConfigLoader

    from wemem.config import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(conf_source=str(Path(__file__).resolve().parents[2] / "conf"), **CONFIG_LOADER_ARGS)
    dask = loader["runner"]["dask"]
    assert dask["address"] is None and dask["cluster"] == {} and dask["resources"] == {}
    assert "dask" not in loader["parameters"]  # runner settings are not pipeline parameters
    assert DaskRunner().settings()["address"] is None  # read from the project's runner config


def test_worker_dask_config_unsets_malloc_trim():
    """conf/base/dask.yml, for `DASK_CONFIG=conf/base/dask.yml dask worker ...`."""
    import dask
    import yaml

    from distributed.nanny import _get_env_variables

    path = Path(__file__).resolve().parents[2] / "conf" / "base" / "dask.yml"
    with dask.config.set(dask.config.merge(dask.config.config, yaml.safe_load(path.read_text()))):
        env = _get_env_variables("distributed.nanny.pre-spawn-environ")
    assert "MALLOC_TRIM_THRESHOLD_" not in env and env["OMP_NUM_THREADS"] == "1"


def test_resources_by_name_namespace_or_tag():
    patterns = {"memscore_shard_*": {"GPU": 1}, "gpu": {"GPU": 1}, "l1_*": {"GPU": 0.5}}
    assert _resources_for(Node(_one, None, "a", name="memscore_shard_3"), patterns) == {"GPU": 1}
    assert _resources_for(Node(_one, None, "a", name="x", tags=["gpu"]), patterns) == {"GPU": 1}
    namespaced = Pipeline([Node(_one, None, "a", name="prune")], namespace="l1_unstructured_s60.base").nodes[0]
    assert _resources_for(namespaced, patterns) == {"GPU": 0.5}
    assert _resources_for(Node(_one, None, "a", name="merge"), patterns) is None
