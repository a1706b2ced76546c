"""A 2-point sweep end to end on tiny data: the sweep's points become namespaces that prune,
attack and report; the reports carry the select step's choice and the RMR table's layout."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest

from tests.conftest import TINY_PARAMS, make_project, run_session

pytestmark = pytest.mark.slow


def _latest(path):
    return sorted(p for p in path.iterdir() if p.is_dir())[-1] / path.name


def test_two_point_sweep_runs_and_selects(tmp_path):
    # what it catches: sweep variants that never reach the pipelines (no namespace, no params:
    # defenses.<point>), a point's setting not applied, or the select step / experiment table
    # missing from the reports written as one unit
    params = copy.deepcopy(TINY_PARAMS)
    params["sweeps"] = {"rmr_lambda": {"variants": "rmr", "vary": {"lambda_r": [0.01, 1]}}}
    params["pruning_defense"]["grid"] = {"defenses": ["base"], "sweeps": "rmr_lambda"}
    params["pruning_defense"]["reference"] = {"unpruned": False, "one_shot": False}
    params["mia_evaluation"].update(attacks=["conf", "lira"], experiment_table="rmr_lambda",
                                    select={"max_acc_drop": 1.0})
    project = make_project(tmp_path)
    run_session(project, runtime_params=params)
    reporting = project / "data" / "08_reporting"
    table = pd.read_csv(_latest(reporting / "defense_comparison.csv"))
    assert list(table["defense"]) == ["base", "rmr_lambda_r_0p01", "rmr_lambda_r_1"]
    assert (table["status"] == "ok").all() and table["defense_type"].tolist() == ["base", "rmr", "rmr"]
    assert "lambda_r=0.01" in table.loc[1, "settings"] and "lambda_r=1" in table.loc[2, "settings"]
    assert table[["dev_acc", "shadow_test_acc", "shadow_max_attack"]].notna().all().all()
    selection = json.loads(_latest(reporting / "selection.json").read_text())
    (group,) = selection["groups"]
    shadow = table.set_index("defense")["shadow_max_attack"]
    assert group["chosen"]["variant"] == shadow.idxmin()  # budget 1.0: the weakest attack on the shadows
    assert {c["variant"] for c in group["candidates"]} == set(table["defense"])
    md = _latest(reporting / "experiment_table.md").read_text()
    assert "| 0.01 |" in md and "| 1 |" in md and "| Base |" in md
