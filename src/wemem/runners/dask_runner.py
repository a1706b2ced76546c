"""``DaskRunner``: runs each node of a Kedro pipeline as a task on a ``dask.distributed`` cluster.

Independent nodes (the memscore shards, the per-combination namespaces of pruning_defense and
mia_evaluation) run at the same time on different workers; a node starts once the nodes it
depends on have finished. ``docs/scaling.md`` shows how to start a cluster and run on it.

Where the cluster is, first found wins:

1. ``kedro run --runner=wemem.runners.DaskRunner --runner-params address=tcp://host:8786``
2. the environment variable ``WEMEM_DASK_ADDRESS``
3. ``dask.address`` in the runner configuration (``conf/<env>/runner.yml``, read like
   ``mlflow.yml``; ``--env`` applies)
4. none: a ``LocalCluster`` on 127.0.0.1 with one single-threaded worker process per core,
   closed after the run (``cluster_args`` / ``dask.cluster`` change its settings).

What the DaskRunner recipe in Kedro's deployment docs gets wrong on Kedro 1.7, and what this
runner does instead:

- In-memory datasets: every task gets its own copy of the catalog, so a ``MemoryDataset`` saved
  on one worker is not seen by the next node. Here a task *returns* the data of its in-memory
  outputs; the tasks that need them take the upstream futures as arguments, so Dask moves the
  data from worker to worker and frees it once no task needs it. In-memory pipeline outputs are
  fetched back into the driver's catalog at the end, as the other runners leave them.
- Project hooks: a fresh worker process knows nothing of the project. Each worker process calls
  ``configure_project`` once and builds its hook manager from the project's ``settings.HOOKS``
  and the plugin hooks, so node and dataset hooks run on the workers.
- MLflow: the driver's ``MLFLOW_*`` and ``WEMEM_MLFLOW_*`` environment variables (tracking URI,
  the project hook's parent run id) are set on the worker for each task (run-scoped ones the
  driver no longer has are removed). If an MLflow run is active on the driver, the node runs with
  that run active on the worker too, so ``mlflow.log_metric`` in a node or node hook lands in
  the driver's run; the run stays RUNNING and the driver ends it.
- ``--only-missing-outputs``, ``--namespaces`` and the other filters are applied by Kedro before
  the runner sees the pipeline; versioned datasets resolve their load version on the worker.

Two more things matter for torch: no more tasks are handed to Dask than the cluster has threads
(each next node goes to the worker that frees up first), and the runner's own ``LocalCluster``
(:func:`local_cluster`) drops Dask's ``MALLOC_TRIM_THRESHOLD_`` setting, which doubled the CPU
time of a memscore shard.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import cloudpickle
from distributed import Client, LocalCluster, as_completed
from kedro.framework.hooks.manager import (
    _create_hook_manager,
    _register_hooks,
    _register_hooks_entry_points,
)
from kedro.pipeline import Pipeline
from kedro.runner import AbstractRunner
from kedro.runner.task import Task

ADDRESS_ENV = "WEMEM_DASK_ADDRESS"
MLFLOW_ENV = ("MLFLOW_", "WEMEM_MLFLOW_")  # environment variables sent to the workers
RUN_SCOPED_ENV = ("WEMEM_MLFLOW_", "MLFLOW_RUN_ID")  # removed there when the driver has none


class DaskRunner(AbstractRunner):
    """Runs the pipeline's nodes as tasks of a ``dask.distributed`` cluster.

    Args:
        address: scheduler address (``tcp://host:8786``); see the module docstring for the
            other places it is read from. Without one, a ``LocalCluster`` is started.
        cluster_args: ``LocalCluster`` settings (``n_workers``, ``threads_per_worker``,
            ``memory_limit``, ``dashboard_address``...) when the runner starts one.
        resources: node name, namespace or tag pattern (``fnmatch``) -> Dask worker resources
            the node's task needs, e.g. ``{"memscore_shard_*": {"GPU": 1}}`` with
            ``dask worker --resources GPU=1``. A task whose resources no worker has waits forever.
        is_async: load inputs and save outputs with threads inside each task.
    """

    def __init__(
        self,
        address: str | None = None,
        cluster_args: dict[str, Any] | None = None,
        resources: dict[str, dict[str, float]] | None = None,
        is_async: bool = False,
    ):
        super().__init__(is_async=is_async)
        self._address = address
        self._cluster_args = dict(cluster_args or {})
        self._resources = dict(resources or {})

    def _get_executor(self, max_workers: int) -> None:  # required by AbstractRunner, unused
        return None

    # ------------------------------------------------------------------ settings
    def settings(self, conf: dict[str, Any] | None = None) -> dict[str, Any]:
        """The address, LocalCluster settings and resources this run uses (see the module doc);
        ``conf`` is the ``dask`` block of the runner configuration (default: the project's)."""
        if conf is None:
            from wemem import structure

            conf = structure.config("runner").get("dask") or {}
        cluster = {"n_workers": os.cpu_count() or 1, "threads_per_worker": 1}
        cluster.update(conf.get("cluster") or {})
        cluster.update(self._cluster_args)
        return {
            "address": self._address or os.environ.get(ADDRESS_ENV) or conf.get("address") or None,
            "cluster": cluster,
            "resources": {**(conf.get("resources") or {}), **self._resources},
        }

    @contextlib.contextmanager
    def _client(self, settings: dict[str, Any]) -> Iterator[Client]:
        if settings["address"]:
            self._logger.info("Dask: connecting to the scheduler at %s", settings["address"])
            with Client(settings["address"]) as client:
                yield client
            return
        self._logger.info(
            "Dask: starting a LocalCluster on 127.0.0.1 (%s workers x %s threads)",
            settings["cluster"]["n_workers"], settings["cluster"]["threads_per_worker"],
        )
        with local_cluster(**settings["cluster"]) as cluster, Client(cluster) as client:
            yield client

    # ------------------------------------------------------------------ run
    def _run(self, pipeline: Pipeline, catalog: Any, hook_manager: Any = None, run_id: str | None = None) -> None:
        nodes = pipeline.nodes  # topologically sorted
        if not nodes:  # e.g. --only-missing-outputs with every output present
            return
        settings = self.settings()
        run_id = run_id or uuid.uuid4().hex
        parents = pipeline.node_dependencies
        children: dict[Any, set] = {n: set() for n in nodes}
        for node, deps in parents.items():
            for parent in deps:
                children[parent].add(node)

        # outputs kept in memory travel as task results; everything else is saved by the task
        in_memory = {ds for n in nodes for ds in n.outputs if getattr(catalog.get(ds), "_EPHEMERAL", False)}
        wanted_back = in_memory & pipeline.outputs()
        # drop cached load versions (e.g. from an --only-missing-outputs check): the data may
        # change during the run, and each task resolves them itself
        for name in pipeline.datasets():
            if not getattr(catalog.get(name), "_EPHEMERAL", False):
                catalog.release(name)
        catalog_blob = cloudpickle.dumps(catalog)  # each task unpickles its own copy

        from kedro.framework.project import LOGGING, PACKAGE_NAME

        context = {
            "package": PACKAGE_NAME,
            "logging": dict(LOGGING) if PACKAGE_NAME else None,
            "mlflow": _driver_mlflow_run(),
            "env": {k: v for k, v in os.environ.items() if k.startswith(MLFLOW_ENV)},
            "in_memory": in_memory,
            "is_async": self._is_async,
            "run_id": run_id,
        }

        with self._client(settings) as client:
            futures: dict[Any, Any] = {}  # node -> future of its task, while its data is needed
            todo, done, submitted = list(nodes), set(), set()
            running = as_completed()

            def submit_ready() -> None:
                # a node is submitted once its parents are done, and no more tasks are out than
                # the cluster has threads, so the next node goes to whichever worker frees up
                # first instead of queueing up front behind a long node. Only the futures that
                # hold in-memory data the node reads are passed to it.
                in_flight = len(submitted) - len(done)
                slots = max(sum(client.nthreads().values()) - in_flight, 0 if in_flight else 1)
                for node in [n for n in todo if parents[n] <= done][:slots]:
                    todo.remove(node)
                    submitted.add(node)
                    data_from = [futures[p] for p in parents[node] if set(p.outputs) & set(node.inputs) & in_memory]
                    futures[node] = client.submit(
                        _run_node_on_worker, node, catalog_blob, context, *data_from,
                        key=f"{node.name}-{run_id}", pure=False,
                        resources=_resources_for(node, settings["resources"]),
                    )
                    running.add(futures[node])

            by_key = {f"{n.name}-{run_id}": n for n in nodes}
            client.run(_hook_manager, context["package"], context["logging"])  # warm up the workers
            try:
                submit_ready()
                for future in running:
                    node = by_key[future.key]
                    future.result()  # re-raises the node's error
                    done.add(node)
                    self._logger.info("Completed node: %s", node.name)
                    self._logger.info("Completed %d out of %d tasks", len(done), len(nodes))
                    submit_ready()
                    # a node's data is released once all its children are done
                    for parent in [node, *parents[node]]:
                        if children[parent] <= done and not set(parent.outputs) & wanted_back:
                            futures.pop(parent, None)
                if todo:
                    raise RuntimeError(f"DaskRunner could not schedule {sorted(n.name for n in todo)}")
            except Exception:
                client.cancel([f for f in futures.values() if not f.done()])
                self._suggest_resume_scenario(pipeline, done, catalog)
                raise
            for node, future in futures.items():
                if set(node.outputs) & wanted_back:
                    for name, data in future.result().items():
                        if name in wanted_back:
                            catalog.save(name, data)


@contextlib.contextmanager
def local_cluster(**cluster_args: Any) -> Iterator[LocalCluster]:
    """A ``LocalCluster`` on 127.0.0.1 fit for torch: one single-threaded worker process per core
    by default, without Dask's ``MALLOC_TRIM_THRESHOLD_`` setting, and without changing this
    process's environment.

    Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (and writes it, with
    ``OMP_NUM_THREADS=1``, into the environment of the process that starts the cluster, where
    later subprocesses inherit it). With it, glibc returns freed memory to the system at once and
    torch's next tensor faults it back in: one memscore shard took 30 s of CPU instead of 16 s
    (5.1 M page faults instead of 0.14 M). The workers here keep glibc's default; they still get
    ``OMP_NUM_THREADS=1``.
    """
    import dask

    args = {"n_workers": os.cpu_count() or 1, "threads_per_worker": 1, "processes": True,
            "dashboard_address": None, **cluster_args, "host": "127.0.0.1"}
    saved = dict(os.environ)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            cluster = LocalCluster(**args)
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)
    with cluster:
        yield cluster


def _resources_for(node: Any, patterns: dict[str, dict[str, float]]) -> dict[str, float] | None:
    """The resources of the first pattern matching the node's name, namespace or a tag."""
    labels = [node.name, node.namespace or "", *node.tags]
    for pattern, resources in patterns.items():
        if any(fnmatch.fnmatchcase(label, pattern) for label in labels):
            return dict(resources)
    return None


# ---------------------------------------------------------------------- MLflow
def _driver_mlflow_run() -> dict[str, str] | None:
    """Tracking URI and id of the driver's active MLflow run (None when there is none)."""
    mlflow = sys.modules.get("mlflow")  # not imported: no run can be active
    run = mlflow.active_run() if mlflow is not None else None
    if run is None:
        return None
    return {"tracking_uri": mlflow.get_tracking_uri(), "run_id": run.info.run_id}


@contextlib.contextmanager
def _mlflow_run(ctx: dict[str, str] | None) -> Iterator[None]:
    """On a worker: makes the driver's run the active run while the node runs."""
    if not ctx:
        yield
        return
    import mlflow

    mlflow.set_tracking_uri(ctx["tracking_uri"])  # also sets MLFLOW_TRACKING_URI
    active = mlflow.active_run()
    if active is not None and active.info.run_id == ctx["run_id"]:
        yield
        return
    mlflow.start_run(run_id=ctx["run_id"])
    try:
        yield
    finally:
        mlflow.end_run(status="RUNNING")  # detach only: the driver ends the run


# ---------------------------------------------------------------------- on the worker
_worker_hooks: dict[str | None, Any] = {}


def _hook_manager(package: str | None, logging_config: dict | None) -> Any:
    """The project's hook manager in this worker process, built on first use."""
    if package not in _worker_hooks:
        from kedro.framework.project import PACKAGE_NAME, configure_logging, configure_project, settings

        if package and PACKAGE_NAME != package:
            configure_project(package)
            if logging_config:
                configure_logging(logging_config)
        manager = _create_hook_manager()
        if package:
            _register_hooks(manager, settings.HOOKS)
            _register_hooks_entry_points(manager, settings.DISABLE_HOOKS_FOR_PLUGINS)
        _worker_hooks[package] = manager
    return _worker_hooks[package]


def _run_node_on_worker(node: Any, catalog_blob: bytes, context: dict[str, Any], *upstream: dict[str, Any]) -> dict[str, Any]:
    """Runs one node on a worker; returns the data of its in-memory outputs."""
    catalog = cloudpickle.loads(catalog_blob)
    for produced in upstream:
        for name, data in produced.items():
            if name in node.inputs:
                catalog.save(name, data)
    hook_manager = _hook_manager(context["package"], context["logging"])
    for key in [k for k in os.environ if k.startswith(RUN_SCOPED_ENV) and k not in context["env"]]:
        del os.environ[key]
    os.environ.update(context["env"])
    with _mlflow_run(context["mlflow"]):
        Task(node=node, catalog=catalog, is_async=context["is_async"], hook_manager=hook_manager,
             run_id=context["run_id"]).execute()
    return {name: catalog.load(name) for name in node.outputs if name in context["in_memory"]}
