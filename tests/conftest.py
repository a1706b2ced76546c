"""Shared fixtures: a throw-away copy of the project with tiny settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_LOCATION = REPO.parent / "shared" / "datasets" / "location" / "dataset_location.tgz"

# Small enough that the whole default pipeline runs in well under a minute on 2 CPU cores,
# while every node, all eight defenses and all ten attacks still do real work.
TINY_PARAMS = {
    "datasets": {"mnist1d": {"loader": {"num_samples": 1200, "seed": 3}, "n_shadows": 2,
                             "defense_defaults": {"w": 12, "s": 2, "tau": 0.6}}},
    "memscore": {"m": 6, "epochs": 3, "n_shards": 2},
    "training": {"epochs": 4, "patience": 2},
    "pruning_defense": {"n_iter": 2, "finetune": {"epochs": 2, "patience": 2}},
    "mia_evaluation": {"attack_model": {"epochs": 2, "batch_size": 256, "milestones": [1, 2]}},
    "progress": False,
}


def make_project(path: Path) -> Path:
    """Copies the project's conf/, pyproject.toml and notebooks/ into ``path``."""
    shutil.copytree(REPO / "conf", path / "conf", ignore=shutil.ignore_patterns("local"))
    (path / "conf" / "local").mkdir()
    (path / "src").mkdir()  # bootstrap_project wants the source dir; the package is installed
    shutil.copy(REPO / "pyproject.toml", path / "pyproject.toml")
    shutil.copy(REPO / ".telemetry", path / ".telemetry")  # consent: false
    if (REPO / "notebooks").is_dir():
        shutil.copytree(REPO / "notebooks", path / "notebooks")
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A throw-away copy of the project as the working directory.

    Kedro resolves the catalog's relative paths against the working directory, so every
    artefact and the MLflow store land in tmp_path.
    """
    make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_session(project_path: Path, pipelines=None, runtime_params=None, **kwargs):
    """Runs a Kedro session of the project at ``project_path`` and returns its outputs."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project_path)
    with KedroSession.create(project_path=project_path, runtime_params=runtime_params or {}) as session:
        return session.run(pipeline_names=pipelines, **kwargs)
