"""Shared fixtures: a throw-away copy of the project with tiny settings, and the guard that the
suite leaves the checkout as it found it (``tests/test_checkout_clean.py``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import tempfile

import pytest
from hypothesis import settings as hypothesis_settings
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps no example database in the checkout (the suite leaves it as it found it);
# failures still print the falsifying example, and every run draws from a fixed seed.
hypothesis_settings.register_profile("wemem", database=None, derandomize=True)
hypothesis_settings.load_profile("wemem")
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="wemem-hypothesis-"))  # its caches, outside the checkout

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


# where a run would otherwise write outside its project copy: an MLflow store or run named by
# the caller's environment (the project's hooks also export the two WEMEM_ ones during a run)
OUTSIDE_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
               "WEMEM_MLFLOW_TRACKING_URI", "WEMEM_MLFLOW_PARENT_RUN_ID")


def project_env(**extra: str) -> dict[str, str]:
    """The environment for a ``kedro`` subprocess run in a project copy: no MLflow store or run
    of the caller's, no telemetry, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in OUTSIDE_ENV}
    return {**env, "DO_NOT_TRACK": "1", "KEDRO_DISABLE_TELEMETRY": "1", **extra}


@contextlib.contextmanager
def in_project(project_path: Path) -> Iterator[Path]:
    """Working directory ``project_path`` and :func:`project_env`, both restored afterwards.

    The working directory matters beyond the catalog (whose relative paths Kedro resolves against
    the project path): kedro-viz's hooks write ``.viz/`` into the project found from it, and
    relative parameters such as ``data_ingestion.raw_root`` are read against it."""
    saved_env, saved_cwd, env = dict(os.environ), Path.cwd(), project_env()
    os.chdir(project_path)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield project_path
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def run_session(project_path: Path, pipelines=None, runtime_params=None, **kwargs):
    """Runs a Kedro session of the project copy at ``project_path`` (from inside it, see
    :func:`in_project`) and returns its outputs."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project_path = Path(project_path).resolve()
    assert project_path != REPO, "run Kedro in a copy (make_project), never in the checkout"
    with in_project(project_path):
        bootstrap_project(project_path)
        with KedroSession.create(project_path=project_path, runtime_params=runtime_params or {}) as session:
            return session.run(pipeline_names=pipelines, **kwargs)


# ------------------------------------------------------------------ the checkout stays as it was
# paths the suite may change: the environment, pytest's cache, bytecode and the editable install
CHECKOUT_EXCLUDES = (".venv", ".pytest_cache", "**/__pycache__/**", "**/*.egg-info/**")
CHECK_TEST = "tests/test_checkout_clean.py::test_suite_leaves_the_checkout_as_it_found_it"


def checkout_state(root: Path = REPO) -> dict[str, tuple] | None:
    """``git status --porcelain --ignored`` of ``root``, one entry per file (``-uall``) without
    :data:`CHECKOUT_EXCLUDES`; ignored files (data, ``.viz/``, ``mlflow.db``, ...) also carry
    their size and modification time, so a test that overwrites one is caught too. ``None`` when
    ``root`` is not in a git work tree (or git is missing)."""
    cmd = ["git", "status", "--porcelain", "-z", "--ignored", "-uall", "--", ".",
           *(f":(exclude,glob){p}" for p in CHECKOUT_EXCLUDES)]
    try:
        out = subprocess.run(cmd, cwd=root, capture_output=True, check=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    state: dict[str, tuple] = {}
    entries = iter(out.decode("utf-8", "surrogateescape").split("\0"))
    for entry in entries:
        if not entry:
            continue
        code, path = entry[:2], entry[3:]
        if code[0] in "RC":  # a rename or copy: the source path follows
            next(entries, None)
        if code == "!!":
            try:
                st = (root / path).stat()
                state[path] = (code, st.st_size, st.st_mtime_ns)
            except OSError:
                state[path] = (code,)
        else:
            state[path] = (code,)
    return state


def checkout_changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """The paths whose entry differs, as ``new``/``gone``/``changed`` lines."""
    lines = []
    for path in sorted(before.keys() | after.keys()):
        if path not in before:
            lines.append(f"new      {after[path][0]} {path}")
        elif path not in after:
            lines.append(f"gone     {before[path][0]} {path}")
        elif before[path] != after[path]:
            lines.append(f"changed  {after[path][0]} {path}")
    return lines


_CHECKOUT_AT_START = pytest.StashKey[object]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_CHECKOUT_AT_START] = checkout_state()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The checkout check runs after every other test."""
    items.sort(key=lambda item: item.nodeid == CHECK_TEST)


@pytest.fixture(scope="session")
def checkout_at_start(request) -> dict[str, tuple] | None:
    """:func:`checkout_state` of the checkout when the session started."""
    return request.config.stash[_CHECKOUT_AT_START]
