"""What the catalog's entries say about themselves (their ``metadata``), for the hooks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["layer_of", "reporting_datasets", "wemem_role", "child_run_datasets"]


def layer_of(config: Mapping[str, Any] | None) -> str | None:
    """The kedro-viz layer of one catalog entry's config."""
    meta = (config or {}).get("metadata") or {}
    return (meta.get("kedro-viz") or {}).get("layer")


def wemem_role(dataset: Any) -> str | None:
    """``metadata.wemem.mlflow`` of a dataset object (e.g. ``child_run`` for attack results)."""
    meta = getattr(dataset, "metadata", None) or {}
    return (meta.get("wemem") or {}).get("mlflow")


def reporting_datasets(conf_catalog: Mapping[str, Any]) -> list[str]:
    """Names of the catalog entries in the ``reporting`` layer, in the catalog's order."""
    return [name for name, cfg in conf_catalog.items()
            if isinstance(cfg, Mapping) and not name.startswith("_") and "{" not in name
            and layer_of(cfg) == "reporting"]


def child_run_datasets(pipeline: Any, catalog: Any) -> list[str]:
    """The datasets of ``pipeline`` whose catalog entry is an MLflow child run (the attack
    results of one combination each), sorted by name."""
    names = []
    for name in sorted(pipeline.datasets()):
        try:
            dataset = catalog.get(name)
        except Exception:  # noqa: BLE001 - not a catalog entry (a parameter, a free output)
            continue
        if dataset is not None and wemem_role(dataset) == "child_run":
            names.append(name)
    return names
