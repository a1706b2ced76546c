"""The parts of the pipeline graph that parameters decide.

How many memscore shards exist, whether scores are imported instead of estimated, which
(pruning method × sparsity × defense) combinations run and over which seeds (``repeats.seeds``)
are parameters (``conf/``), yet they decide which nodes exist. The project hook hands the run's config loader (with ``--env`` and
``--params`` applied) to this module before Kedro builds the pipelines; without a session
(e.g. ``kedro registry list``) the project's ``conf/`` is read with ``KEDRO_ENV``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wemem.config import CONFIG_LOADER_ARGS, ConfigLoader, read
from wemem.ml.grid import Combo, combos_from, seeds_from

_config_loader: Any = None
_built_for: tuple | None = None


@dataclass(frozen=True)
class Structure:
    n_shards: int
    import_csv: bool
    combos: tuple[Combo, ...]
    seeds: tuple[int, ...] | None = None  # repeats.seeds: one namespace per seed; None: no seed namespace

    def key(self) -> tuple:
        return (self.n_shards, self.import_csv, self.combos, self.seeds)


def _conf_source() -> str:
    cwd_conf = Path.cwd() / "conf"
    if (cwd_conf / "base").is_dir():
        return str(cwd_conf)
    return str(Path(__file__).resolve().parents[2] / "conf")


def _default_loader():
    return ConfigLoader(conf_source=_conf_source(), env=os.environ.get("KEDRO_ENV"), **CONFIG_LOADER_ARGS)


def set_config_loader(config_loader: Any) -> None:
    """Called by the project hook once the run's context exists."""
    global _config_loader
    _config_loader = config_loader
    if _built_for is not None and _built_for != current().key():
        # parameters changed the graph since the pipelines were last built: rebuild them
        from kedro.framework.project import PACKAGE_NAME, pipelines

        pipelines.configure(f"{PACKAGE_NAME}.pipeline_registry")


def mark_built(structure: Structure) -> None:
    global _built_for
    _built_for = structure.key()


def config(key: str) -> dict[str, Any]:
    """One configuration of the run (``parameters``, ``runner``, ...); ``{}`` when conf has none."""
    loader = _config_loader if _config_loader is not None else _default_loader()
    try:
        return dict(read(loader, key))
    except Exception:  # noqa: BLE001 - MissingConfigException: no such file in conf/
        return {}


def parameters() -> dict[str, Any]:
    return config("parameters")


def current() -> Structure:
    params = parameters()
    memscore = params.get("memscore", {})
    return Structure(
        n_shards=int(memscore.get("n_shards", 1)),
        import_csv=bool(memscore.get("import_csv")),
        combos=combos_from(params.get("pruning_defense", {})),
        seeds=seeds_from(params.get("repeats")),
    )
