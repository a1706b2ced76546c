"""The select step chooses on the shadows and dev data only: known answers on hand-made tables,
the same choice when the victim's membership labels (and everything measured with them) are
shuffled, and the build_reports node writing the choice next to the oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.ml.test_attacks import LOGIT, make_data
from tests.ml.test_attacks_registry import _outputs
from wemem.ml.evaluation import MiaEvaluationSettings, attack_record
from wemem.ml.grid import Combo
from wemem.ml.select import DECISION_COLUMNS, SelectSettings, select_defenses, selection_markdown
from wemem.pipelines.mia_evaluation.nodes import build_reports

# one group (l1 @ 60%): base, and three sweep points; numbers chosen by hand
ROWS = [  # variant, dev_acc, shadow_test_acc, shadow_max, shadow_chosen, victim test_acc, chosen_acc, max_attack_acc
    ("base", 0.800, 0.790, 0.700, 0.690, 0.810, 0.700, 0.720),
    ("rmr_lambda_r_0p01", 0.790, 0.780, 0.600, 0.590, 0.805, 0.580, 0.600),  # in budget; oracle (victim 0.600)
    ("rmr_lambda_r_0p1", 0.785, 0.770, 0.580, 0.570, 0.800, 0.610, 0.630),   # in budget, weakest on shadows
    ("rmr_lambda_r_1", 0.750, 0.740, 0.520, 0.510, 0.760, 0.520, 0.540),     # 5 points below base: out
]


def _table(rows=ROWS, seed=None):
    cols = ["defense", *DECISION_COLUMNS, "test_acc", "chosen_acc", "max_attack_acc"]
    t = pd.DataFrame(rows, columns=cols)
    t.insert(0, "dataset", "location"), t.insert(1, "model", "column_fc")
    t.insert(2, "pruning_method", "l1_unstructured"), t.insert(3, "sparsity", 0.6)
    t["status"] = "ok"
    t["conf_acc"] = t["chosen_acc"]  # a per-attack victim column, as in the comparison table
    if seed is not None:
        t["seed"] = seed
    unpruned = t.iloc[[0]].assign(pruning_method="none", sparsity=0.0, defense="unpruned", dev_acc=0.99)
    return pd.concat([unpruned, t], ignore_index=True)


def test_known_answer_choice_oracle_and_gap():
    # what it catches: the budget ignored (rmr_lambda_r_1 has the weakest attack but is 5 points below
    # base), the victim's numbers used for the choice (the oracle is 0p01), or a wrong gap
    sel = select_defenses(_table(), SelectSettings(max_acc_drop=0.02))
    (g,) = sel["groups"]
    assert g["chosen"]["variant"] == "rmr_lambda_r_0p1"
    assert g["oracle"]["variant"] == "rmr_lambda_r_0p01"
    assert g["gap"] == pytest.approx(0.630 - 0.600)
    assert g["chosen"]["victim"] == {"test_acc": 0.800, "chosen_acc": 0.610, "max_attack_acc": 0.630}
    assert [c["variant"] for c in g["candidates"]] == [r[0] for r in ROWS]  # unpruned is no candidate
    wide = select_defenses(_table(), SelectSettings(max_acc_drop=0.06))["groups"][0]
    assert wide["chosen"]["variant"] == wide["oracle"]["variant"] == "rmr_lambda_r_1" and wide["gap"] == 0
    md = selection_markdown(sel)
    assert "| **selected** | rmr_lambda_r_0p1 | 80.00 | 61.00 | 63.00 |" in md and "Gap: 3.00 points." in md


def test_privacy_and_utility_columns_can_be_switched():
    # shadow_chosen_attack and shadow_test_acc give the same order here; candidates restricts the choice
    settings = SelectSettings(privacy="shadow_chosen_attack", utility="shadow_test_acc",
                              candidates=["rmr_lambda_r_0p01"])
    g = select_defenses(_table(), settings)["groups"][0]
    assert g["chosen"]["variant"] == "rmr_lambda_r_0p01"
    assert [c["variant"] for c in g["candidates"]] == ["base", "rmr_lambda_r_0p01"]


def test_shuffling_every_victim_number_keeps_the_choice():
    # what it catches: any victim column (measured with its membership labels) reaching the choice
    rng = np.random.default_rng(0)
    base = select_defenses(_table(), SelectSettings())["groups"][0]
    for _ in range(5):
        t = _table()
        for col in ("test_acc", "chosen_acc", "max_attack_acc", "conf_acc"):
            t[col] = rng.permutation(t[col].to_numpy())
        g = select_defenses(t, SelectSettings())["groups"][0]
        assert g["chosen"]["variant"] == base["chosen"]["variant"]


def test_per_seed_rows_choose_on_the_means():
    # seed 1 alone picks 0p1 (0.58 < 0.60), seed 2 alone 0p01; the means (0p1: (0.58 + 0.64) / 2 = 0.61 > 0.60) pick 0p01
    rows2 = [list(r) for r in ROWS]
    rows2[2][3] = 0.640  # rmr_lambda_r_0p1's shadow_max_attack on seed 2
    t = pd.concat([_table(seed=1), _table([tuple(r) for r in rows2], seed=2)], ignore_index=True)
    g = select_defenses(t, SelectSettings())["groups"][0]
    assert g["n_seeds"] == 2 and g["chosen"]["variant"] == "rmr_lambda_r_0p01"
    assert g["chosen"]["shadow_max_attack"] == pytest.approx(0.6)


def test_no_shadow_attack_means_no_choice():
    t = _table()
    t["shadow_max_attack"] = np.nan  # one shadow: no leave-one-shadow-out
    g = select_defenses(t, SelectSettings())["groups"][0]
    assert g["chosen"] is None and np.isnan(g["gap"]) and "none in budget" in selection_markdown({**{
        "settings": SelectSettings().as_dict()}, "groups": [g]})


def _records(shuffle: bool):
    """Two sweep points on synthetic worlds (leaky: members at 0.99 confidence; private: 0.75),
    each through attack_record; with ``shuffle`` the victim's membership labels are permuted."""
    mia = MiaEvaluationSettings.model_validate({"attacks": ["conf", "entr"], "roc_points": 10,
                                                "select": {"max_acc_drop": 1.0}})
    records = []
    for variant, phi_in, seed in (("base", 0.99, 3), ("rmr_lambda_r_1", 0.75, 4)):
        data = make_data(seed=seed, n_target=300, n_shadow=200, n_shadows=2, n_pop=80, phi_in=LOGIT(phi_in))
        outputs = _outputs(data)
        if shuffle:
            outputs["victim/member"] = np.random.default_rng(seed).permutation(outputs["victim/member"])
        log = {"meta": {"status": "ok", "defense": variant.split("_")[0], "settings": {}},
               "models": {"victim": {"finetune_seconds": 1.0, "final_global_sparsity": 0.6}}}
        records.append(attack_record(Combo("l1_unstructured", 0.6, variant), outputs, log, dataset="mnist1d",
                                     model="column_fc", settings=mia, seed=0, device="cpu"))
    return mia, records


def test_build_reports_choice_ignores_the_victims_membership_labels():
    # a 2-point slice through attack_record and the build_reports node: shuffling the victim's
    # membership labels changes the victim's numbers but neither what the choice sees nor the choice
    mia, records = _records(shuffle=False)
    _, shuffled = _records(shuffle=True)
    for a, b in zip(records, shuffled):
        assert {k: a[k] for k in DECISION_COLUMNS} == {k: b[k] for k in DECISION_COLUMNS}
        assert np.isfinite(a["shadow_max_attack"]) and 0 <= a["dev_acc"] <= 1
    assert records[1]["attacks"]["conf"] != shuffled[1]["attacks"]["conf"]
    reports, again = build_reports(mia, *records), build_reports(mia, *shuffled)
    chosen = reports["selection"]["groups"][0]["chosen"]
    assert chosen["variant"] == again["selection"]["groups"][0]["chosen"]["variant"] == "rmr_lambda_r_1"
    assert chosen["victim"] != again["selection"]["groups"][0]["chosen"]["victim"]
    assert "rmr_lambda_r_1" in reports["selection_md"] and {"dev_acc", "shadow_max_attack"} <= set(
        reports["defense_comparison"].columns)
