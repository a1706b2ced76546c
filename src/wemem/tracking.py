"""MLflow tracking of every ``kedro run``: a parent run, one child run per (combination, seed).

The hook reacts to data being saved, not to node names: a dataset whose catalog entry carries
``metadata: {wemem: {mlflow: child_run}}`` (the attack results of one combination and seed)
becomes a child run with its params and metrics; a dataset of the ``reporting`` layer becomes an
artifact of the parent run (a report set: one artifact per member). With several seeds
(``repeats.seeds``) the run ends with a summary run per combination (tag ``wemem.summary=true``):
every child metric as ``<metric>_mean/_std/_ci_low/_ci_high`` and ``n_seeds``
(:func:`wemem.ml.results.summary_metrics`).

Reliability:

* **Resumes.** Each parent run carries the host and process id of its ``kedro run``. A new run
  closes every parent still ``RUNNING`` whose process is gone (SIGKILL, power loss) as
  ``KILLED``, with its unfinished children; SIGTERM closes the run's own parent as ``KILLED``
  before the process ends. At the end of a run, every combination of the pipeline whose attack
  results exist but have no child under this parent (results reused by
  ``--only-missing-outputs``) gets its child from the saved results (tag ``wemem.reused``), so
  the final parent always holds every combination.
* **A dead or locked store** costs one warning line: every MLflow call runs with a bounded
  wait (``mlflow.timeout_s``, default 30 s), and the first failure or timeout turns tracking off
  for the rest of the run; the closing summary then says that tracking was off.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from wemem.catalog_meta import child_run_datasets, reporting_datasets, wemem_role
from wemem.config import read
from wemem.ml.results import child_metrics, child_params, child_run_name, child_tags
from wemem.mlflow_logging import log_summaries, log_value

__all__ = ["MlflowTrackingHook", "PARENT_ENV", "URI_ENV", "OFF_ENV"]

log = logging.getLogger(__name__)

PARENT_ENV = "WEMEM_MLFLOW_PARENT_RUN_ID"
URI_ENV = "WEMEM_MLFLOW_TRACKING_URI"
OFF_ENV = "WEMEM_MLFLOW_OFF"  # why tracking is off for this run (read by the closing summary)
HOST, PID = socket.gethostname(), os.getpid()
# MLflow's store retries and logs each failed connection (with the SQL) at WARNING: one line of
# ours says it instead
for _name in ("mlflow.store", "alembic", "sqlalchemy"):
    logging.getLogger(_name).setLevel(logging.ERROR)


def _resolve_uri(uri: str, project_path: Path) -> str:
    """Makes a relative ``sqlite:///file.db`` URI absolute under the project root."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str((project_path / uri[len(prefix):]).resolve())
    return uri


def _alive(host: str | None, pid: str | None) -> bool:
    """Whether the process that owns a run may still be running (unknown: assume it is)."""
    if host != HOST or not pid or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but another user's
        return True
    return True


class MlflowTrackingHook:
    """Logs every ``kedro run`` to MLflow.

    Uses ``MlflowClient`` with explicit run ids (no global active run), so it also works when
    nodes run in other threads or processes.
    """

    def __init__(self) -> None:
        self.client = None
        self.parent_id: str | None = None
        self.settings: dict[str, Any] = {}
        self.seed: Any = None
        self.seeds: Any = None
        self.max_acc_drop = 0.02  # mia_evaluation.report.max_acc_drop: the accuracy budget of the answer
        self.catalog = None
        self.reports: list[str] = []
        self.failed = False
        self._dropped: tuple[Any, str] | None = None  # (client, parent) of a run whose tracking was turned off
        self._previous_sigterm: Any = None

    # ------------------------------------------------------------------ bounded calls
    def _call(self, fn, *args: Any, _timeout: float | None = None, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with a bounded wait: a store that does not answer within
        ``mlflow.timeout_s`` raises TimeoutError (the call is abandoned in its thread)."""
        timeout = float(_timeout or self.settings.get("timeout_s", 30.0))
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["error"] = exc

        thread = threading.Thread(target=target, name="wemem-mlflow", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"the store did not answer within {timeout:g} s (locked by another process?)")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _disable(self, exc: BaseException) -> None:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        log.warning(
            "MLflow tracking disabled for this run (%s); the reports in data/08_reporting are still written. "
            "Check mlflow.tracking_uri in conf/base/mlflow.yml and that the store is writable and not locked.", reason)
        if self.client is not None and self.parent_id is not None:
            self._dropped = (self.client, self.parent_id)
        self.client = None
        os.environ.pop(PARENT_ENV, None)  # nor may a later node or worker pick the run up again
        os.environ.pop(URI_ENV, None)
        os.environ[OFF_ENV] = reason

    # ------------------------------------------------------------------ run start
    @hook_impl
    def after_context_created(self, context) -> None:
        try:
            self.settings = dict(context.config_loader["mlflow"])
        except Exception:  # noqa: BLE001 - no mlflow.yml: tracking off
            self.settings = {"enabled": False}
        self.project_path = Path(context.project_path)
        params = read(context.config_loader, "parameters")
        self.seed = params.get("seed")
        self.seeds = (params.get("repeats") or {}).get("seeds")
        report = ((params.get("mia_evaluation") or {}).get("report") or {})
        self.max_acc_drop = float(report.get("max_acc_drop", 0.02))

    @hook_impl
    def after_catalog_created(self, catalog, conf_catalog: dict[str, Any], **kwargs: Any) -> None:
        self.catalog = catalog
        self.reports = reporting_datasets(conf_catalog)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self.client, self.parent_id, self.failed, self._dropped = None, None, False, None
        self.children = child_run_datasets(pipeline, catalog)
        for key in (PARENT_ENV, URI_ENV, OFF_ENV):
            os.environ.pop(key, None)
        if not self.settings.get("enabled", False):
            os.environ[OFF_ENV] = "mlflow.enabled is false in conf/*/mlflow.yml"
            return
        if os.environ.get("WEMEM_MLFLOW_DISABLE"):
            os.environ[OFF_ENV] = "WEMEM_MLFLOW_DISABLE is set"
            return
        if "DryRunner" in str(run_params.get("runner")):
            os.environ[OFF_ENV] = "a dry run runs no node"
            return
        uri = _resolve_uri(str(self.settings.get("tracking_uri", "sqlite:///mlflow.db")), self.project_path)
        # a new SQLite store is created with its schema migrations (seconds on a busy machine);
        # nothing else can hold a store that does not exist yet
        db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
        fresh = db is not None and (not db.exists() or db.stat().st_size == 0)
        abandoned = threading.Event()
        try:
            self.client, self.exp_id, self.parent_id = self._call(self._start, uri, run_params, catalog, abandoned,
                                                                  _timeout=120.0 if fresh else None)
        except Exception as exc:  # noqa: BLE001
            abandoned.set()
            self._disable(exc)
            return
        os.environ[PARENT_ENV], os.environ[URI_ENV] = self.parent_id, uri
        log.info("MLflow: run %s in experiment %r at %s", self.parent_id, self.settings.get("experiment", "wemem"), uri)
        self._watch_sigterm()

    def _start(self, uri: str, run_params: dict[str, Any], catalog, abandoned: threading.Event) -> tuple[Any, str, str]:
        """Opens the store, closes interrupted runs, creates this run's parent (and closes it
        again if the caller stopped waiting meanwhile)."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        name = str(self.settings.get("experiment", "wemem"))
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else client.create_experiment(name)
        killed = self._close_dead_parents(client, exp_id)
        runtime = run_params.get("runtime_params") or {}
        pipelines = ",".join(run_params.get("pipeline_names") or ["__default__"])
        dataset = runtime.get("dataset") or catalog.load("params:dataset")
        tags = {"kedro.run_id": str(run_params.get("run_id")), "kedro.pipelines": pipelines,
                "kedro.env": str(run_params.get("env")), "wemem.host": HOST, "wemem.pid": str(PID)}
        if killed:
            tags["wemem.resumes"] = ",".join(killed)
        run = client.create_run(exp_id, run_name=f"{dataset} · {pipelines} · {run_params.get('run_id', '')[:19]}",
                                tags=tags)
        client.log_param(run.info.run_id, "dataset", dataset)
        client.log_param(run.info.run_id, "seed", str(self.seed))
        if self.seeds is not None:
            client.log_param(run.info.run_id, "seeds", " ".join(str(s) for s in self.seeds))
        if abandoned.is_set():  # tracking is off for this run: leave no parent RUNNING
            client.set_terminated(run.info.run_id, "FAILED")
        return client, exp_id, run.info.run_id

    @staticmethod
    def _close_dead_parents(client, exp_id: str) -> list[str]:
        """Closes as KILLED every RUNNING run of this host whose process is gone; returns the
        parents closed."""
        running = client.search_runs([exp_id], filter_string="attributes.status = 'RUNNING'", max_results=1000)
        dead = [r.info.run_id for r in running if "mlflow.parentRunId" not in r.data.tags
                and not _alive(r.data.tags.get("wemem.host"), r.data.tags.get("wemem.pid"))]
        for r in running:
            if r.data.tags.get("mlflow.parentRunId") in dead:
                client.set_terminated(r.info.run_id, "KILLED")
        for rid in dead:
            client.set_tag(rid, "wemem.closed_by", f"a later run on {HOST}: its process had ended")
            client.set_terminated(rid, "KILLED")
        if dead:
            log.info("MLflow: closed %d interrupted run(s) as KILLED: %s", len(dead), ", ".join(dead))
        return dead

    def _watch_sigterm(self) -> None:
        """SIGTERM closes this run's parent as KILLED, then ends the process as before."""
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigterm(signum, frame) -> None:
            self._finish("KILLED")
            signal.signal(signal.SIGTERM, self._previous_sigterm or signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

        self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    # ------------------------------------------------------------------ during the run
    def _worker_client(self) -> None:
        """In a worker process the driver's hook state is absent: rebuild the client from the
        tracking URI and parent run id that the driver exported to the environment."""
        parent, uri = os.environ.get(PARENT_ENV), os.environ.get(URI_ENV)
        if self.client is not None or not parent or not uri or os.environ.get("WEMEM_MLFLOW_DISABLE"):
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        run = self._call(client.get_run, parent)
        self.client, self.parent_id = client, parent
        self.exp_id = run.info.experiment_id
        self.seed, self.seeds = run.data.params.get("seed"), run.data.params.get("seeds")

    @hook_impl
    def before_node_run(self, node, catalog, inputs: dict[str, Any], is_async: bool, run_id: str) -> None:
        self.catalog = catalog  # a worker process sees the catalog here first

    def _role(self, dataset_name: str) -> str | None:
        if dataset_name in self.reports:
            return "artifact"
        try:
            return wemem_role(self.catalog.get(dataset_name)) if self.catalog is not None else None
        except Exception:  # noqa: BLE001 - not a catalog entry (e.g. a free output)
            return None

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        role = self._role(dataset_name)
        if role is None:
            return
        try:
            self._worker_client()
        except Exception as exc:  # noqa: BLE001
            self._disable(exc)
        if self.client is None:
            return
        try:
            if role == "child_run":
                self._log_child(data)
            elif role == "artifact":
                self._log_artifact(dataset_name, data)
        except Exception as exc:  # noqa: BLE001
            self._disable(exc)

    def _log_child(self, result: dict[str, Any], reused_from: str | None = None) -> None:
        """One child run for one combination's result; every store call is bounded."""
        from mlflow.entities import Metric, Param

        from wemem.ml.reporting import plot_roc_curves

        ok = result.get("status", "ok") == "ok"
        self.failed = self.failed or not ok
        tags = {"mlflow.parentRunId": self.parent_id, "wemem.namespace": result["namespace"],
                "wemem.seed": str(result.get("seed", self.seed)), **child_tags(result)}
        if not ok:
            tags["wemem.error"] = str(result.get("error", "failed"))[:4900]
        if reused_from:
            tags["wemem.reused"] = reused_from
        params = [Param(k, v) for k, v in child_params(result, result.get("seed", self.seed)).items()]
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in child_metrics(result).items()]
        name = child_run_name(result, self.seeds is not None)
        rid = self._call(self.client.create_run, self.exp_id, run_name=name, tags=tags).info.run_id
        self._call(self.client.log_batch, rid, metrics=metrics, params=params)
        if result.get("roc"):
            floors = {name: 1.0 / result["n_nonmembers"]} if result.get("n_nonmembers") else None
            figure = plot_roc_curves({name: result["roc"]}, floors, {name: result.get("attacks") or {}})
            self._call(self.client.log_figure, rid, figure, "roc_curves.png", save_kwargs={"bbox_inches": "tight"})
        self._call(self.client.set_terminated, rid, "FINISHED" if ok else "FAILED")

    def _log_artifact(self, name: str, value: Any) -> None:
        members = getattr(self.catalog.get(name), "members", None) if self.catalog is not None else None
        if isinstance(members, dict) and isinstance(value, dict):
            for member, data in value.items():
                self._log_artifact_value(member, data)
            if "defense_comparison" in value:
                self._describe_parent(value["defense_comparison"])
            return
        self._log_artifact_value(name, value)

    def _log_artifact_value(self, name: str, value: Any) -> None:
        log_value(self._call, self.client, self.parent_id, name, value)

    def _describe_parent(self, table: Any) -> None:
        """The parent run's description (``mlflow.note.content``) with the one-line answer, and
        the answer's numbers as parent metrics and tags (:func:`wemem.ml.report_html.parent_summary`)."""
        from mlflow.entities import Metric, RunTag

        from wemem.ml.report_html import parent_summary

        name = self._call(self.client.get_run, self.parent_id).info.run_name
        tags, values = parent_summary(table, self.max_acc_drop, name)
        now = int(time.time() * 1000)
        self._call(self.client.log_batch, self.parent_id, tags=[RunTag(k, v) for k, v in tags.items()],
                   metrics=[Metric(k, v, now, 0) for k, v in values.items()])

    # ------------------------------------------------------------------ run end
    def _log_reused(self, catalog) -> list[dict[str, Any]]:
        """A child for every (combination, seed) of the pipeline whose results exist on disk but
        have no child under this parent (reused by ``--only-missing-outputs``, or logged by a worker
        that could not reach the store); returns every result found."""
        runs = self._call(self.client.search_runs, [self.exp_id],
                          filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'", max_results=10000)
        logged = {(r.data.tags.get("wemem.namespace"), r.data.tags.get("wemem.seed")) for r in runs
                  if r.data.tags.get("wemem.summary") != "true"}
        found = []
        for name in self.children:
            if not catalog.exists(name):
                continue
            result = catalog.load(name)
            found.append(result)
            if (result.get("namespace"), str(result.get("seed", self.seed))) in logged:
                self.failed = self.failed or result.get("status", "ok") != "ok"
                continue
            path = getattr(catalog.get(name), "_get_load_path", lambda: name)()
            self._log_child(result, reused_from=str(path))
        return found

    def _log_summaries(self, results: list[dict[str, Any]]) -> None:
        log_summaries(self._call, self.client, self.exp_id, self.parent_id, results)

    def _finish(self, status: str, catalog=None) -> None:
        """Logs the reused children (at the end of a run) and closes the parent. When tracking
        was turned off during the run, one more bounded try closes the parent as FAILED (the
        store may be free again); if that fails too, the next run closes it as KILLED."""
        if self.client is not None and self.parent_id is not None:
            try:
                if catalog is not None:
                    self._log_summaries(self._log_reused(catalog))
                    status = "FAILED" if self.failed else status
                self._call(self.client.set_terminated, self.parent_id, status)
            except Exception as exc:  # noqa: BLE001
                self._disable(exc)
        if self._dropped is not None:
            client, parent = self._dropped
            self._dropped = None
            try:
                self._call(client.set_terminated, parent, "FAILED")
            except Exception as exc:  # noqa: BLE001 - already warned once
                log.debug("MLflow: could not close run %s (%s)", parent, exc)
        os.environ.pop(PARENT_ENV, None)
        self.parent_id = None

    @hook_impl(tryfirst=True)
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._finish("FINISHED", catalog)
        self._restore_sigterm()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._finish("FAILED")
        self._restore_sigterm()
