"""Faults a user meets (issue 16, issue 18 item 2), each reproduced through ``kedro run``:
a run killed mid-way and resumed (MLflow checked with MlflowClient), a truncated artefact found
on resume, a locked MLflow store, one combination that raises, and project errors as one line."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, TINY_PARAMS, make_project, project_env

pytestmark = pytest.mark.slow

KEDRO = str(Path(sys.executable).parent / "kedro")
PLUGINS = "import tests.integration.fault_plugins as f; f.main()"


def _params(defenses: list[str], **reference) -> dict:
    params = copy.deepcopy(TINY_PARAMS)
    params["pruning_defense"]["grid"] = {"methods": ["l1_unstructured"], "sparsities": [0.6], "defenses": defenses}
    params["pruning_defense"]["reference"] = {"unpruned": True, "one_shot": True, **reference}
    params["mia_evaluation"]["attacks"] = ["conf", "entr"]
    return params


def _project(root: Path, params: dict, mlflow: dict | None = None) -> Path:
    project = make_project(root)
    (project / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(params))
    if mlflow:
        (project / "conf" / "local" / "mlflow.yml").write_text(yaml.safe_dump(mlflow))
    return project


def _kedro(project: Path, *args: str, plugins: bool = False, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-c", PLUGINS, "run", *args] if plugins else [KEDRO, "run", *args]
    env = project_env(PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def _finish(proc: subprocess.Popen, timeout: int = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _client(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def _runs(project: Path):
    client = _client(project)
    exp = client.get_experiment_by_name("wemem")
    return client.search_runs([exp.experiment_id], max_results=1000)


# ------------------------------------------------------------------ kill, resume, truncated file
def _wait_for_unpruned_results(project, proc) -> None:
    """Blocks until the running ``proc`` has saved the unpruned combination's attack results."""
    first = project / "data" / "07_model_output" / "mnist1d" / "unpruned" / "attack_results.json"
    deadline = time.time() + 600
    while not first.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "the run never reached the unpruned results"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A run killed (SIGKILL) after the unpruned combination's results were saved, then resumed
    with ``--only-missing-outputs``. Returns (project, runs before the resume, resume output)."""
    project = _project(tmp_path_factory.mktemp("resume"), _params(["base", "rsw"]))
    proc = _kedro(project, start_new_session=True)
    _wait_for_unpruned_results(project, proc)
    time.sleep(0.5)  # the hooks log the unpruned child
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _runs(project)
    code, out = _finish(_kedro(project, "--only-missing-outputs"))
    assert code == 0, out
    return project, before, out


def test_resumed_run_closes_the_killed_parent_and_holds_every_child(resumed):
    # what it catches (issue 16): the killed parent stayed RUNNING forever and the resumed parent
    # lacked the children whose results were reused (the unpruned row)
    project, before, out = resumed
    assert any(r.info.status == "RUNNING" for r in before)  # the kill left the parent running
    assert not re.search(r"Running node: unpruned\.\S*run_membership_attacks", out)  # nothing redone
    runs = _runs(project)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    parents = sorted((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)
    assert [p.info.status for p in parents] == ["KILLED", "FINISHED"]
    final = parents[-1].info.run_id
    children = {r.data.tags["wemem.namespace"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == final}
    assert sorted(children) == ["l1_unstructured_s60.base", "l1_unstructured_s60.one_shot", "l1_unstructured_s60.rsw",
                                "unpruned"]
    assert "wemem.reused" in children["unpruned"].data.tags
    assert "wemem.reused" not in children["l1_unstructured_s60.rsw"].data.tags
    assert all(c.info.status == "FINISHED" for c in children.values())
    assert children["unpruned"].data.metrics["conf_balanced_acc"] > 0


def test_truncated_results_found_on_resume_are_named_and_redone(resumed):
    # what it catches (issue 16): --only-missing-outputs treated a truncated attack_results.json
    # as present, and build_reports then failed with a raw JSON error
    project, _, _ = resumed
    results = project / "data" / "07_model_output" / "mnist1d" / "l1_unstructured_s60.rsw" / "attack_results.json"
    [version] = list(results.iterdir())
    path = version / "attack_results.json"
    path.write_text(path.read_text()[:100])
    code, out = _finish(_kedro(project, "--only-missing-outputs"))
    assert code == 0, out
    lines = [line for line in out.splitlines() if "attack_results.json is truncated" in line]
    assert lines and "kedro run --only-missing-outputs" in lines[0] and str(path) in lines[0]
    assert "Traceback" not in out
    versions = sorted(results.iterdir())
    assert len(versions) == 2  # a new, complete version (Kedro reruns only nodes with missing outputs)
    assert json.loads((versions[-1] / "attack_results.json").read_text())["namespace"] == "l1_unstructured_s60.rsw"
    assert not re.search(r"Running node: l1_unstructured_s60\.base\.\S*run_membership_attacks", out)


# ------------------------------------------------------------------ a locked store
def test_locked_mlflow_store_costs_one_warning_line_and_a_bounded_wait(tmp_path):
    # what it catches (issue 16): a store held by another process's write transaction stalled
    # the run ~20 s, printed ~60 lines of SQLAlchemy traceback, left the parent RUNNING, and the
    # closing summary still pointed to the MLflow runs
    project = _project(tmp_path, _params(["base"]), mlflow={"timeout_s": 2})
    _client(project).create_experiment("wemem")  # the store exists, with its schema
    lock = sqlite3.connect(project / "mlflow.db", timeout=0, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        code, out = _finish(_kedro(project, "--pipelines", "data_ingestion"), timeout=300)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert code == 0, out
    warnings = [line for line in out.splitlines() if "MLflow tracking disabled" in line]
    assert len(warnings) == 1 and "did not answer within 2 s" in warnings[0], out
    assert "Traceback" not in out and "sqlalchemy" not in out.lower()
    stamps = {}
    for line in out.splitlines():
        m = re.match(r"(\d\d:\d\d:\d\d) ", line)
        if m and "Kedro project wemem" in line:
            stamps["start"] = datetime.strptime(m.group(1), "%H:%M:%S")
        if m and "MLflow tracking disabled" in line:
            stamps["warned"] = datetime.strptime(m.group(1), "%H:%M:%S")
    assert (stamps["warned"] - stamps["start"]).total_seconds() <= 2 + 6  # bounded wait (+ start-up)
    assert "tracking was off for this run" in out
    assert not [r for r in _runs(project) if r.info.status == "RUNNING"]


# ------------------------------------------------------------------ one combination raises
def test_a_combination_that_raises_leaves_the_others_ok_and_the_run_fails(tmp_path):
    # what it catches (issue 18): an exception (other than a NaN loss) in one combination ended
    # the run for every combination
    params = _params(["base", "explode"], one_shot=False)
    params["defenses"] = {"explode": {"defense": "explode"}}
    project = _project(tmp_path, params)
    code, out = _finish(_kedro(project, plugins=True))
    assert code != 0
    assert "Traceback" not in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("Error: 1 of 3 combination(s) failed: l1_unstructured_s60.explode (pruning and "
                           "defending: RuntimeError: boom"), last
    [version] = list((project / "data" / "08_reporting" / "defense_comparison.csv").iterdir())
    table = pd.read_csv(version / "defense_comparison.csv").set_index("defense")
    assert table.loc["explode", "status"] == "failed" and "boom" in table.loc["explode", "error"]
    assert (table.drop(index="explode")["status"] == "ok").all()
    assert table.loc["base", "conf_acc"] > 0
    runs = _runs(project)
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED"
    children = {r.data.tags["wemem.namespace"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert children["l1_unstructured_s60.explode"].info.status == "FAILED"
    assert "boom" in children["l1_unstructured_s60.explode"].data.tags["wemem.error"]
    assert children["l1_unstructured_s60.base"].info.status == "FINISHED"


# ------------------------------------------------------------------ one line per project error
def test_project_errors_are_one_line_before_any_node(tmp_path):
    # what it catches (issue 16): project errors as the last line of a 40-160-line traceback, a
    # missing memscore.import_csv found only when its node ran, unknown pipelines and
    # namespaces without the valid names, a combination that cannot run found after training
    project = _project(tmp_path, _params(["base"]))
    cases = {
        ("--params", "memscore.import_csv=scores/missing.csv"): "memscore.import_csv = 'scores/missing.csv': no such file",
        ("--pipelines", "memscor"): "unknown pipeline 'memscor' (--pipelines); valid: __default__, data_ingestion, "
                                    "memscore, mia_evaluation, pruning_defense, ranking",
        ("--namespaces", "l1_unstructured_s60.rws"): "valid: l1_unstructured_s60, l1_unstructured_s60.base,",
        ("--env", "picky"): "combination l1_unstructured_s60.picky (picky on column_fc, dataset mnist1d) cannot run: "
                            "picky cannot train column_fc",
    }
    picky = _params(["base", "picky"])
    picky["defenses"] = {"picky": {"defense": "picky"}}
    (project / "conf" / "picky").mkdir()
    (project / "conf" / "picky" / "parameters.yml").write_text(yaml.safe_dump(picky))
    for args, expected in cases.items():
        code, out = _finish(_kedro(project, *args, plugins=True), timeout=300)
        assert code == 1, out
        assert "Traceback" not in out and "Running node" not in out, out
        assert expected in out and "Error: " in out, out
        assert "WEMEM_DEBUG=1" in out
    # the debug flag brings the traceback back
    env_proc = subprocess.run([sys.executable, "-c", PLUGINS, "run", "--pipelines", "memscor"], cwd=project,
                              env={**project_env(PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'src'}"), "WEMEM_DEBUG": "1"},
                              capture_output=True, text=True, timeout=300)
    assert env_proc.returncode != 0 and "Traceback" in env_proc.stderr


def test_sigterm_closes_the_parent_as_killed(tmp_path):
    # what it catches (issue 16): a run ended by SIGTERM left its MLflow parent RUNNING forever
    project = _project(tmp_path, _params(["base"]))
    proc = _kedro(project)
    _wait_for_unpruned_results(project, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    [parent] = [r for r in _runs(project) if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"


def test_store_locked_mid_run_costs_one_warning_and_the_parent_is_closed(tmp_path):
    # what it catches (issue 16): a store locked while the run was logging stalled it, printed
    # a SQLAlchemy traceback and left the parent RUNNING with no child
    project = _project(tmp_path, _params(["base"]), mlflow={"timeout_s": 2})
    proc = _kedro(project)
    db = project / "mlflow.db"
    deadline = time.time() + 300
    while True:  # wait for the parent run and its params
        assert proc.poll() is None and time.time() < deadline
        if not db.exists():  # (connecting would create an empty file)
            time.sleep(0.1)
            continue
        try:
            with sqlite3.connect(db, timeout=5) as con:
                if con.execute("SELECT count(*) FROM params").fetchone()[0] >= 2:  # the parent is set up
                    break
        except sqlite3.OperationalError:  # no file or no table yet
            pass
        time.sleep(0.1)
    lock = sqlite3.connect(db, timeout=30, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "MLflow tracking disabled" in line and lock is not None:
            lock.execute("ROLLBACK")  # the store is free again before the run ends
            lock.close()
            lock = None
    proc.wait(timeout=300)
    if lock is not None:
        lock.close()
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert len([line for line in lines if "MLflow tracking disabled" in line]) == 1, out
    assert "Traceback" not in out and "tracking was off for this run" in out
    runs = _runs(project)
    assert not [r for r in runs if r.info.status == "RUNNING"], out
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED"
