"""Project hooks, one job each.

- :class:`ValidationHook`: checks every parameter before any work (one error listing all problems).
- :class:`TorchSetupHook`: torch threads and deterministic kernels, in the driver and in workers.
- :class:`GraphHook`: hands the run's configuration to :mod:`wemem.structure`, which decides
  the nodes that parameters create (memscore shards, grid combinations).
- :class:`MlflowTrackingHook` (:mod:`wemem.tracking`): a parent run per ``kedro run``, a child
  run per saved attack result, the reports as the parent's artifacts.
- :class:`ReportLocationHook`: ends a run that wrote reports by saying where they are (and
  whether MLflow tracking was on).
- :class:`FailureSummaryHook`: ends a run in which a combination failed with one error naming
  every failed combination (the others finished), so ``kedro run`` exits non-zero.

Hooks that react to data look at the catalog entry's metadata, not at node names: the
attack results carry ``metadata: {wemem: {mlflow: child_run}}`` and reports sit in the
``reporting`` layer (``metadata: {kedro-viz: {layer: reporting}}``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from wemem import structure
from wemem.catalog_meta import child_run_datasets, reporting_datasets
from wemem.config import read
from wemem.errors import CombinationsFailed
from wemem.tracking import OFF_ENV, URI_ENV, MlflowTrackingHook

__all__ = ["ValidationHook", "TorchSetupHook", "GraphHook", "MlflowTrackingHook", "ReportLocationHook",
           "FailureSummaryHook", "configure_torch"]

log = logging.getLogger(__name__)


class ValidationHook:
    """Validates the run's raw parameters (``--env`` and ``--params`` applied) before Kedro or any
    node uses them: a typo fails in the first second, with every problem in one message. Then
    checks what the schema cannot (:mod:`wemem.preflight`): every setting that names a file or
    folder, and every combination of the grid that cannot run at all."""

    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        from wemem.params import validate_parameters
        from wemem.preflight import check_run

        params = read(context.config_loader, "parameters")
        validate_parameters(params)
        check_run(params, Path(context.project_path))


class TorchSetupHook:
    """Applies ``torch_threads`` and ``deterministic`` in the driver, and once in every worker
    process (Dask, ParallelRunner) that never saw the context."""

    @hook_impl
    def after_context_created(self, context) -> None:
        params = read(context.config_loader, "parameters")
        configure_torch(int(params.get("torch_threads", 0)), bool(params.get("deterministic", True)))

    @hook_impl
    def before_node_run(self, node, catalog, inputs: dict[str, Any], is_async: bool, run_id: str) -> None:
        if _torch_configured:
            return
        try:
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


class GraphHook:
    """Hands the run's config loader to :mod:`wemem.structure` before the pipelines are built."""

    @hook_impl
    def after_context_created(self, context) -> None:
        structure.set_config_loader(context.config_loader)


class ReportLocationHook:
    """Ends a run that wrote any dataset of the catalog's ``reporting`` layer by listing where
    the reports are, and where the MLflow runs are."""

    def __init__(self) -> None:
        self.saved: list[str] = []
        self.reports: list[str] = []

    @hook_impl
    def after_catalog_created(self, catalog, conf_catalog: dict[str, Any], **kwargs: Any) -> None:
        self.reports = reporting_datasets(conf_catalog)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self.saved = []

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        if dataset_name in self.reports:
            self.saved.append(dataset_name)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if not self.saved:
            return
        lines = ["WeMem results:"]
        for name in self.saved:
            try:
                dataset = catalog.get(name)
                paths = dataset.member_paths() if hasattr(dataset, "member_paths") else {name: dataset._get_load_path()}
            except Exception:  # noqa: BLE001 - a dataset without a file path
                continue
            lines += [f"  {member:<26} {path}" for member, path in paths.items()]
        uri, off = os.environ.get(URI_ENV), os.environ.get(OFF_ENV)
        if uri:
            lines.append(f"  {'MLflow runs':<26} {uri}: make mlflow-ui, then http://127.0.0.1:5000")
        elif off:
            lines.append(f"  {'MLflow runs':<26} none: tracking was off for this run ({off})")
        log.info("\n".join(lines))


class FailureSummaryHook:
    """After a run, reads the attack results of every combination of the pipeline (this run's
    or reused) and, when any failed, raises one :class:`~wemem.errors.CombinationsFailed` naming
    each with its error: the other combinations and the reports are done by then, and the
    command exits non-zero with that one line. Runs after every other ``after_pipeline_run``."""

    @hook_impl(trylast=True)
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if "DryRunner" in str(run_params.get("runner")):
            return  # a dry run checks the command, not the results of earlier runs
        results = []
        for name in child_run_datasets(pipeline, catalog):
            try:
                if catalog.exists(name):
                    results.append(catalog.load(name))
            except Exception as exc:  # noqa: BLE001 - an unreadable result: named, not fatal here
                log.warning("%s could not be read for the run's summary: %s", name, exc)
        results = [r for r in results if isinstance(r, dict)]
        repeats = len({r.get("seed") for r in results}) > 1  # name each failure with its seed
        failed = {(f"{r.get('namespace', '?')} (seed {r.get('seed')})" if repeats else r.get("namespace", "?")):
                  r.get("error", "failed") for r in results if r.get("status", "ok") != "ok"}
        if failed:
            raise CombinationsFailed(failed, len(results))
