"""The suite leaves the checkout as it found it: every test that runs Kedro runs in a temporary
copy (``tests.conftest.make_project``), so no ``data/``, ``.viz/``, ``mlflow.db`` or ``build/``
of a test run lands where ``kedro run`` and kedro-viz would show it as the user's.

``tests/conftest.py`` records ``git status --porcelain --ignored`` at session start and runs
this module after every other test.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import checkout_changes, checkout_state, in_project


def test_suite_leaves_the_checkout_as_it_found_it(checkout_at_start):
    if checkout_at_start is None:
        pytest.skip("the checkout is not a git work tree")
    changes = checkout_changes(checkout_at_start, checkout_state())
    assert not changes, (
        "the test session changed the checkout (git status --porcelain --ignored; a path under "
        "src/ or tests/ may also be someone's concurrent edit):\n" + "\n".join(changes))


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_the_check_sees_new_overwritten_and_modified_files(tmp_path):
    try:
        _git(tmp_path, "init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    (tmp_path / ".gitignore").write_text("data/**\n!data/**/\n.viz/\n.venv/\n__pycache__/\n")
    (tmp_path / "tracked.txt").write_text("a")
    (tmp_path / ".viz").mkdir()
    (tmp_path / ".viz" / "stats.json").write_text("{}")
    _git(tmp_path, "add", ".gitignore", "tracked.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    before = checkout_state(tmp_path)
    assert checkout_changes(before, checkout_state(tmp_path)) == []

    (tmp_path / ".venv").mkdir()  # excluded: the environment, bytecode
    (tmp_path / ".venv" / "x").write_text("x")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "m.pyc").write_bytes(b"x")
    assert checkout_changes(before, checkout_state(tmp_path)) == []

    (tmp_path / "data" / "01_raw").mkdir(parents=True)
    (tmp_path / "data" / "01_raw" / "raw.npz").write_bytes(b"x")
    (tmp_path / ".viz" / "stats.json").write_text('{"a": 1}')
    (tmp_path / "tracked.txt").write_text("b")
    (tmp_path / "new.txt").write_text("c")
    assert checkout_changes(before, checkout_state(tmp_path)) == [
        "changed  !! .viz/stats.json",
        "new      !! data/01_raw/raw.npz",
        "new      ?? new.txt",
        "new       M tracked.txt",
    ]


def test_outside_a_git_work_tree_there_is_nothing_to_compare(tmp_path):
    assert checkout_state(tmp_path) is None


def test_runs_start_inside_the_copy_without_the_callers_mlflow_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")  # would be the checkout's
    monkeypatch.setenv("KEDRO_MP_CONTEXT", "spawn")
    env, cwd = dict(os.environ), Path.cwd()
    with in_project(tmp_path):
        assert Path.cwd() == tmp_path.resolve()
        assert "MLFLOW_TRACKING_URI" not in os.environ
        assert os.environ["KEDRO_MP_CONTEXT"] == "spawn" and os.environ["PATH"] == env["PATH"]
        os.environ["WEMEM_MLFLOW_PARENT_RUN_ID"] = "run-1"  # as a run's hook exports it
    assert dict(os.environ) == env and Path.cwd() == cwd
