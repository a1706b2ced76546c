"""Reliability: resuming a killed run, same-seed determinism, diverging defenses, an MLflow
store that cannot be written."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import TINY_PARAMS, make_project, project_env, run_session
from wemem.errors import CombinationsFailed

pytestmark = pytest.mark.slow

KEDRO = str(Path(sys.executable).parent / "kedro")


def _params(**overrides):
    params = copy.deepcopy(TINY_PARAMS)
    for dotted, value in overrides.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return params


def _versions(path: Path) -> list[Path]:
    return sorted(v / path.name for v in path.iterdir() if v.is_dir())


def _kedro(project: Path, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([KEDRO, "run", *args], cwd=project, env=project_env(WEMEM_MLFLOW_DISABLE="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def test_killed_memscore_run_resumes_without_retraining_finished_shards(tmp_path):
    project = make_project(tmp_path)
    memscore = "memscore.m=9,memscore.n_shards=3,memscore.epochs=25,datasets.mnist1d.loader.num_samples=1200"
    assert _kedro(project, "--pipelines", "data_ingestion", "--params", memscore).wait(timeout=300) == 0
    shards = project / "data" / "03_primary" / "mnist1d" / "memscore_shards"
    proc = _kedro(project, "--pipelines", "memscore", "--params", memscore, start_new_session=True)
    deadline = time.time() + 300
    while not (shards / "shard_0.npz").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # killed in the middle: shard 0 done, the others not
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard_*.npz")}
    assert "shard_0.npz" in finished and len(finished) < 3
    assert not (project / "data" / "03_primary" / "mnist1d" / "memscores.csv").exists()

    resumed = _kedro(project, "--pipelines", "memscore", "--params", memscore, "--only-missing-outputs")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    for name, mtime in finished.items():  # finished shards were not retrained
        assert (shards / name).stat().st_mtime_ns == mtime
    assert sorted(p.name for p in shards.glob("shard_*.npz")) == ["shard_0.npz", "shard_1.npz", "shard_2.npz"]
    assert "Running node: memscore_shard_0" not in out
    # readable logs: neither kedro's omegaconf deprecation warnings nor a type-hint warning per node
    assert "register_new_resolver" not in out and "Could not extract type hints" not in out
    first = _versions(project / "data" / "03_primary" / "mnist1d" / "memscores.csv")
    assert len(first) == 1

    # a full re-run adds a new version and leaves the earlier one intact and loadable
    again = _kedro(project, "--pipelines", "memscore", "--params", memscore)
    assert again.wait(timeout=600) == 0
    versions = _versions(project / "data" / "03_primary" / "mnist1d" / "memscores.csv")
    assert len(versions) == 2 and versions[0] == first[0]
    pd.testing.assert_frame_equal(pd.read_csv(versions[0]), pd.read_csv(versions[1]))  # same seed, same scores


def _run_copy(root: Path, name: str, params: dict) -> Path:
    project = make_project(root / name)
    run_session(project, runtime_params=copy.deepcopy(params))
    return project


def _latest(path: Path) -> Path:
    return _versions(path)[-1]


def test_same_seed_gives_identical_artefacts(tmp_path, monkeypatch):
    monkeypatch.setenv("WEMEM_MLFLOW_DISABLE", "1")
    params = _params(**{"pruning_defense.grid.defenses": ["rsw", "dpsgd"]})
    a = _run_copy(tmp_path, "a", params)
    b = _run_copy(tmp_path, "b", params)
    data = Path("data")
    for rel in ["02_intermediate/mnist1d/splits.npz", "07_model_output/mnist1d/l1_unstructured_s60.dpsgd/model_outputs.npz"]:
        za, zb = np.load(_latest(a / data / rel)), np.load(_latest(b / data / rel))
        assert za.files == zb.files
        for k in za.files:
            np.testing.assert_array_equal(za[k], zb[k], err_msg=f"{rel}:{k}")
    for rel in ["03_primary/mnist1d/memscores.csv", "04_feature/mnist1d/rankings.csv", "08_reporting/defense_comparison.csv"]:
        ta, tb = pd.read_csv(_latest(a / data / rel)), pd.read_csv(_latest(b / data / rel))
        ignore = [c for c in ta.columns if c == "finetune_seconds"]  # wall time is not a result
        pd.testing.assert_frame_equal(ta.drop(columns=ignore), tb.drop(columns=ignore))
    for combo in ("rsw", "dpsgd"):
        rel = f"06_models/mnist1d/l1_unstructured_s60/{combo}/pruned_models.pt"
        ma = torch.load(_latest(a / data / rel), weights_only=True)["models"]
        mb = torch.load(_latest(b / data / rel), weights_only=True)["models"]
        for role in ma:
            for key in ma[role]:
                assert torch.equal(ma[role][key], mb[role][key]), f"{combo}/{role}/{key}"


def test_diverging_defense_is_reported_and_the_others_finish(project, monkeypatch, caplog):
    monkeypatch.setenv("WEMEM_MLFLOW_DISABLE", "1")
    params = _params(**{
        "pruning_defense.grid.defenses": ["base", "boom"],
        # |CE − α| overflows float32 at once (RMR's λ_r no longer diverges: it is Adam's weight
        # decay, whose steps Adam normalises)
        "defenses.boom": {"defense": "relaxloss", "alpha": 1e39},
    })
    with caplog.at_level("ERROR"), pytest.raises(CombinationsFailed, match=r"1 of 4 combination\(s\) failed: "
                                                                      r"l1_unstructured_s60\.boom"):
        run_session(project, runtime_params=params)  # the others finish, then the run fails with one line
    table = pd.read_csv(_latest(project / "data" / "08_reporting" / "defense_comparison.csv"))
    row = table.set_index("defense").loc["boom"]
    assert row["status"] == "failed" and "training loss became" in row["error"]
    assert np.isnan(row["test_acc"]) and np.isnan(row["max_attack_acc"])
    assert (table[table["defense"] != "boom"]["status"] == "ok").all()
    assert "boom" in caplog.text and "diverged" in caplog.text
    markdown = _latest(project / "data" / "08_reporting" / "defense_comparison.md").read_text()
    assert "boom (FAILED)" in markdown


def test_unwritable_mlflow_store_warns_and_loses_no_report(project, caplog):
    blocker = project / "blocker"
    blocker.write_text("a file where the store's folder should be")
    (project / "conf" / "local" / "mlflow.yml").write_text(f"tracking_uri: sqlite:///{blocker}/mlflow.db\n")
    params = _params(**{"pruning_defense.grid.defenses": ["base"]})
    with caplog.at_level("WARNING"):
        run_session(project, runtime_params=params)
    assert "MLflow tracking disabled for this run" in caplog.text
    assert _latest(project / "data" / "08_reporting" / "defense_comparison.csv").exists()
    assert _latest(project / "data" / "08_reporting" / "privacy_utility.png").exists()
