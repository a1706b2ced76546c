"""`kedro viz build` renders the project's pipelines with their layers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_project, project_env

pytestmark = pytest.mark.slow


def test_viz_build_shows_data_ingestion_with_layers(tmp_path):
    project = make_project(tmp_path)
    kedro = str(Path(sys.executable).parent / "kedro")
    proc = subprocess.run([kedro, "viz", "build"], cwd=project, env=project_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    api = project / "build" / "api" / "pipelines"
    assert {p.name for p in api.iterdir()} >= {"data_ingestion", "memscore", "ranking", "pruning_defense", "mia_evaluation"}
    graph = json.loads((api / "data_ingestion").read_text())
    layers = {n["name"]: n.get("layer") for n in graph["nodes"]}
    assert layers["splits"] == "intermediate" and layers["dataset_arrays"] == "intermediate"
    assert layers["split_sizes"] == "reporting"
    default = json.loads((api / "__default__").read_text())
    assert {"intermediate", "primary", "feature", "models", "model_output", "reporting"} <= set(default["layers"])
    # kedro-viz labels a node by its name without the namespace: the name carries the combination
    tasks = {n["name"] for n in default["nodes"] if n["type"] == "task"}
    assert {"rsw_l1_unstructured_60.prune_and_defend", "unpruned.run_membership_attacks",
            "one_shot_l1_unstructured_60.compute_model_outputs"} <= tasks
