"""Project hooks: the pipeline structure from parameters, and MLflow tracking."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from wemem import structure

log = logging.getLogger(__name__)

PARENT_ENV = "WEMEM_MLFLOW_PARENT_RUN_ID"
URI_ENV = "WEMEM_MLFLOW_TRACKING_URI"


class StructureHook:
    """Validates the run's parameters, then hands the configuration to
    :mod:`wemem.structure` before pipelines are built: a typo fails before any work starts.
    Also applies the torch settings, in the driver and once in every worker process."""

    @hook_impl
    def after_context_created(self, context) -> None:
        from wemem.params import validate_parameters

        params = context.params
        validate_parameters(params)
        configure_torch(int(params.get("torch_threads", 0)), bool(params.get("deterministic", True)))
        structure.set_config_loader(context.config_loader)

    @hook_impl
    def before_node_run(self, node, catalog, inputs: dict[str, Any], is_async: bool, run_id: str) -> None:
        if _torch_configured:
            return
        try:  # a worker process (Dask, ParallelRunner) that never saw the context
            threads, deterministic = catalog.load("params:torch_threads"), catalog.load("params:deterministic")
        except Exception:  # noqa: BLE001 - a catalog without these parameters: torch defaults
            return
        configure_torch(int(threads), bool(deterministic))


_torch_configured = False


def configure_torch(threads: int, deterministic: bool) -> None:
    """CPU thread count and deterministic kernels (cuBLAS workspace, no cuDNN autotuning)."""
    import torch

    global _torch_configured
    _torch_configured = True
    # denormal floats (e.g. tiny SAMIA sensitivities of a well-regularised model) make CPU
    # arithmetic many times slower; flushing them to zero changes nothing measurable
    torch.set_flush_denormal(True)

    if threads > 0:
        torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        # warn_only: an op without a deterministic CUDA kernel warns instead of failing the run
        torch.use_deterministic_algorithms(True, warn_only=True)


def _resolve_uri(uri: str, project_path: Path) -> str:
    """Makes a relative ``sqlite:///file.db`` URI absolute under the project root."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str((project_path / uri[len(prefix):]).resolve())
    return uri


def child_params(result: dict[str, Any], seed: Any) -> dict[str, str]:
    """MLflow params of one combination."""
    params = {
        "dataset": result.get("dataset"),
        "model": result.get("model"),
        "pruning_method": result.get("method") or "none",
        "sparsity": result.get("sparsity") if result.get("sparsity") is not None else 0.0,
        "defense": result.get("defense"),
        "variant": result.get("variant"),
        "status": result.get("status", "ok"),
        "seed": seed,
    }
    params.update({f"defense.{k}": v for k, v in (result.get("settings") or {}).items()})
    return {k: str(v) for k, v in params.items()}


def child_metrics(result: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics of one combination: accuracy, every attack's four metrics, cost."""
    metrics: dict[str, float] = {}
    for key in ("test_acc", "train_acc", "finetune_seconds", "final_sparsity", "epsilon"):
        value = result.get(key)
        if isinstance(value, (int, float)):
            metrics[key] = float(value)
    accs = {}
    for attack, m in (result.get("attacks") or {}).items():
        for k, v in m.items():
            metrics[f"{attack}_{k}".replace("@", "_")] = float(v)
        accs[attack] = float(m["balanced_acc"])
    if accs:
        metrics["max_attack_acc"] = max(accs.values())
    return metrics


class MlflowTrackingHook:
    """Logs every ``kedro run`` to MLflow: a parent run, one child run per combination.

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
        self.seed = context.params.get("seed")

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
    def after_node_run(self, node, outputs: dict[str, Any], inputs: dict[str, Any]) -> None:
        try:
            self._worker_client()
        except Exception as exc:  # noqa: BLE001
            self._disable(exc)
        if self.client is None:
            return
        try:
            if node.name.endswith("run_membership_attacks"):
                result = next(v for k, v in outputs.items() if k.endswith("attack_results"))
                self._log_child(result)
            elif node.name == "build_reports":
                self._log_reports(outputs)
        except Exception as exc:  # noqa: BLE001
            self._disable(exc)

    def _log_child(self, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param

        from wemem.ml.reporting import plot_roc_curves

        run = self.client.create_run(self.exp_id, run_name=result["namespace"],
                                     tags={"mlflow.parentRunId": self.parent_id, "wemem.namespace": result["namespace"]})
        rid = run.info.run_id
        params = [Param(k, v) for k, v in child_params(result, self.seed).items()]
        import time

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in child_metrics(result).items()]
        self.client.log_batch(rid, metrics=metrics, params=params)
        if result.get("roc"):
            fig = plot_roc_curves({result["namespace"]: result["roc"]})
            self.client.log_figure(rid, fig, "roc_curves.png")
        self.client.set_terminated(rid, "FINISHED" if result.get("status", "ok") == "ok" else "FAILED")

    def _log_reports(self, outputs: dict[str, Any]) -> None:
        from matplotlib.figure import Figure

        for name, value in outputs.items():
            if isinstance(value, Figure):
                self.client.log_figure(self.parent_id, value, f"{name}.png")
            elif isinstance(value, str):
                self.client.log_text(self.parent_id, value, f"{name}.md")
            elif hasattr(value, "to_csv"):
                self.client.log_text(self.parent_id, value.to_csv(index=False), f"{name}.csv")

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


REPORT_DATASETS = ("defense_comparison", "defense_comparison_md", "time_cost", "privacy_utility_plot", "roc_curves_plot")


class ReportLocationHook:
    """Ends a run that built the reports by saying where the table, plots and MLflow runs are."""

    def __init__(self) -> None:
        self.built = False

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self.built = False

    @hook_impl
    def after_node_run(self, node, outputs: dict[str, Any], inputs: dict[str, Any]) -> None:
        if node.name == "build_reports":
            self.built = True

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if not self.built:
            return
        lines = ["WeMem results:"]
        for name in REPORT_DATASETS:
            try:
                path = catalog.get(name)._get_load_path()
            except Exception:  # noqa: BLE001 - a dataset without a file path
                continue
            lines.append(f"  {name:<22} {path}")
        uri = os.environ.get(URI_ENV)
        if uri:
            lines.append(f"  MLflow runs            {uri} (experiment 'wemem'): make mlflow-ui, then http://127.0.0.1:5000")
        log.info("\n".join(lines))
