"""MLflow tracking of every ``kedro run``: a parent run, one child run per combination.

The hook reacts to data being saved, not to node names: a dataset whose catalog entry carries
``metadata: {wemem: {mlflow: child_run}}`` (the attack results of one combination) becomes a
child run with its params and metrics; a dataset of the ``reporting`` layer becomes an
artifact of the parent run.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from wemem.catalog_meta import reporting_datasets, wemem_role
from wemem.config import read
from wemem.ml.results import child_metrics, child_params

__all__ = ["MlflowTrackingHook", "PARENT_ENV", "URI_ENV"]

log = logging.getLogger(__name__)

PARENT_ENV = "WEMEM_MLFLOW_PARENT_RUN_ID"
URI_ENV = "WEMEM_MLFLOW_TRACKING_URI"


def _resolve_uri(uri: str, project_path: Path) -> str:
    """Makes a relative ``sqlite:///file.db`` URI absolute under the project root."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str((project_path / uri[len(prefix):]).resolve())
    return uri


class MlflowTrackingHook:
    """Logs every ``kedro run`` to MLflow.

    Uses ``MlflowClient`` with explicit run ids (no global active run), so it also works when
    nodes run in other threads or processes. A store that cannot be written (locked,
    read-only, unreachable) gives one warning and the run goes on: the reports in
    ``data/08_reporting`` are written either way.
    """

    def __init__(self) -> None:
        self.client = None
        self.parent_id: str | None = None
        self.settings: dict[str, Any] = {}
        self.seed: Any = None
        self.catalog = None
        self.reports: list[str] = []

    def _disable(self, exc: Exception) -> None:
        log.warning(
            "MLflow tracking disabled for this run (%s: %s); the reports in data/08_reporting are still "
            "written. Check mlflow.tracking_uri in conf/base/mlflow.yml and that the store is writable.",
            type(exc).__name__, exc,
        )
        self.client = None
        os.environ.pop(PARENT_ENV, None)  # nor may a later node or worker pick the run up again

    @hook_impl
    def after_context_created(self, context) -> None:
        try:
            self.settings = dict(context.config_loader["mlflow"])
        except Exception:  # noqa: BLE001 - no mlflow.yml: tracking off
            self.settings = {"enabled": False}
        self.project_path = Path(context.project_path)
        self.seed = read(context.config_loader, "parameters").get("seed")

    @hook_impl
    def after_catalog_created(self, catalog, conf_catalog: dict[str, Any], **kwargs: Any) -> None:
        self.catalog = catalog
        self.reports = reporting_datasets(conf_catalog)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self.client, self.parent_id = None, None
        if not self.settings.get("enabled", False) or os.environ.get("WEMEM_MLFLOW_DISABLE"):
            return
        try:
            from mlflow.tracking import MlflowClient

            uri = _resolve_uri(str(self.settings.get("tracking_uri", "sqlite:///mlflow.db")), self.project_path)
            client = MlflowClient(tracking_uri=uri)
            name = str(self.settings.get("experiment", "wemem"))
            exp = client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp else client.create_experiment(name)
            runtime = run_params.get("runtime_params") or {}
            pipelines = ",".join(run_params.get("pipeline_names") or ["__default__"])
            dataset = runtime.get("dataset") or catalog.load("params:dataset")
            run = client.create_run(exp_id, run_name=f"{dataset} · {pipelines} · {run_params.get('run_id', '')[:19]}",
                                    tags={"kedro.run_id": str(run_params.get("run_id")), "kedro.pipelines": pipelines,
                                          "kedro.env": str(run_params.get("env"))})
            client.log_param(run.info.run_id, "dataset", dataset)
            client.log_param(run.info.run_id, "seed", str(self.seed))
            self.client, self.exp_id, self.parent_id = client, exp_id, run.info.run_id
            os.environ[PARENT_ENV], os.environ[URI_ENV] = self.parent_id, uri
            log.info("MLflow: run %s in experiment %r at %s", self.parent_id, name, uri)
        except Exception as exc:  # noqa: BLE001
            self._disable(exc)

    def _worker_client(self) -> None:
        """In a worker process the driver's hook state is absent: rebuild the client from the
        tracking URI and parent run id that the driver exported to the environment."""
        parent, uri = os.environ.get(PARENT_ENV), os.environ.get(URI_ENV)
        if self.client is not None or not parent or not uri or os.environ.get("WEMEM_MLFLOW_DISABLE"):
            return
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.parent_id = parent
        self.exp_id = self.client.get_run(parent).info.experiment_id
        self.seed = self.client.get_run(parent).data.params.get("seed")

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

    def _log_child(self, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param

        from wemem.ml.reporting import plot_roc_curves

        run = self.client.create_run(self.exp_id, run_name=result["namespace"],
                                     tags={"mlflow.parentRunId": self.parent_id, "wemem.namespace": result["namespace"]})
        rid = run.info.run_id
        params = [Param(k, v) for k, v in child_params(result, self.seed).items()]
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in child_metrics(result).items()]
        self.client.log_batch(rid, metrics=metrics, params=params)
        if result.get("roc"):
            floors = {result["namespace"]: 1.0 / result["n_nonmembers"]} if result.get("n_nonmembers") else None
            fig = plot_roc_curves({result["namespace"]: result["roc"]}, floors)
            self.client.log_figure(rid, fig, "roc_curves.png")
        self.client.set_terminated(rid, "FINISHED" if result.get("status", "ok") == "ok" else "FAILED")

    def _log_artifact(self, name: str, value: Any) -> None:
        from matplotlib.figure import Figure

        if isinstance(value, Figure):
            self.client.log_figure(self.parent_id, value, f"{name}.png")
        elif isinstance(value, str):
            self.client.log_text(self.parent_id, value, f"{name}.md")
        elif hasattr(value, "to_csv"):
            self.client.log_text(self.parent_id, value.to_csv(index=False), f"{name}.csv")
        elif isinstance(value, dict):
            self.client.log_dict(self.parent_id, value, f"{name}.json")

    def _finish(self, status: str) -> None:
        if self.client is None or self.parent_id is None:
            return
        try:
            self.client.set_terminated(self.parent_id, status)
        except Exception as exc:  # noqa: BLE001
            self._disable(exc)
        finally:
            os.environ.pop(PARENT_ENV, None)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._finish("FINISHED")

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._finish("FAILED")
