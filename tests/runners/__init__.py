"""Runner tests: a temporary copy of the project, run on tiny settings with different runners.

The copy holds the project's ``conf/`` and ``pyproject.toml`` (the package itself is the
installed one); runs start from inside the copy, so ``data/`` (raw data included) and kedro-viz's
``.viz/`` land there and never in the checkout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tests.conftest import make_project as copy_project, run_session

# mnist1d with 600 samples, 4 models of 2 epochs in 2 memscore shards: seconds per run
TINY = {
    "memscore": {"m": 4, "epochs": 2, "n_shards": 2},
    "progress": False,
    "datasets": {"mnist1d": {"loader": {"num_samples": 600}}},
}
SLICE = ["data_ingestion", "memscore"]


def make_project(root: Path) -> Path:
    """A runnable copy of the project under ``root`` (``tests.conftest.make_project``), MLflow
    tracking off."""
    copy_project(root)
    (root / "conf" / "local" / "mlflow.yml").write_text("enabled: false\n")
    return root


def run_project(project: Path, runner: Any, pipelines: list[str] = SLICE, runtime_params: dict | None = None,
                **run_kwargs: Any) -> dict[str, Any]:
    """``kedro run --pipelines ...`` of ``project`` with ``runner`` (TINY settings by default), from
    inside ``project`` (``tests.conftest.run_session``)."""
    from wemem import structure

    saved = structure._config_loader, structure._built_for  # the run's hook replaces them
    try:
        return run_session(project, pipelines, runtime_params or TINY, runner=runner, **run_kwargs)
    finally:
        structure._config_loader, structure._built_for = saved


def latest(path: Path) -> Path:
    """The newest version of a versioned dataset file (``path/<version>/<name>``), or ``path``."""
    if path.is_dir():
        return sorted(path.iterdir())[-1] / path.name
    return path


def results(project: Path, dataset: str = "mnist1d") -> dict[str, Any]:
    """What the slice wrote: the memscores table and each shard's statistics."""
    primary = project / "data" / "03_primary" / dataset
    shards = {}
    for f in sorted((primary / "memscore_shards").glob("shard_*.npz")):
        with np.load(f) as z:
            shards[f.stem] = {k: z[k] for k in z.files if k != "seconds"}  # seconds: wall time
    return {"memscores": pd.read_csv(latest(primary / "memscores.csv")), "shards": shards}


def assert_same_results(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Exact equality of the memscores tables and of the shards' arrays."""
    pd.testing.assert_frame_equal(a["memscores"], b["memscores"], check_exact=True)
    assert a["shards"].keys() == b["shards"].keys() and a["shards"]
    for name, arrays in a["shards"].items():
        assert arrays.keys() == b["shards"][name].keys()
        for key, value in arrays.items():
            np.testing.assert_array_equal(value, b["shards"][name][key], err_msg=f"{name}/{key}")
