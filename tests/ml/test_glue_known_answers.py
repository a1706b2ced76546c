"""The glue from model outputs to what a person reads (issue 17): which outputs are labelled
member, the time-cost table, and what MLflow gets (``child_params`` / ``child_metrics`` and the
tracking hook's child run). Every expected value is written out here by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from tests.ml.test_attacks_audit import _tiny_experiment
from wemem.ml.attacks import SamiaSettings
from wemem.ml.evaluation import model_outputs
from wemem.ml.experiment import load_models
from wemem.ml.reporting import time_cost_table
from wemem.ml.results import child_metrics, child_params

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ member labelling
def test_model_outputs_label_each_role_s_train_rows_members_and_its_test_rows_not():
    """For every role, the outputs are the role's train rows (members) then its test rows
    (non-members), each with its own label and that model's logits on it; the shadows' OUT
    outputs on the victim's samples, the population (victim's dev rows) likewise. Catches
    member/non-member swapped, a role's outputs computed by another role's model, a shadow's
    reference rows in the wrong order and the dev rows used as non-members."""
    arrays, splits, info, payload = _tiny_experiment(seed=3)
    out = model_outputs(payload, arrays, splits, info, "column_fc", SamiaSettings(n_draws=1), 0, "cpu")
    nets = load_models(payload, "column_fc", info, torch.device("cpu"))
    x_all, y_all = arrays["features"], arrays["labels"]

    def logits(role, rows):
        with torch.no_grad():
            return nets[role](torch.as_tensor(x_all[rows])).numpy()

    for role in ("victim", "shadow_0", "shadow_1"):
        train, test = splits[f"{role}/train"], splits[f"{role}/test"]
        rows = np.r_[train, test]
        assert out[f"{role}/member"].tolist() == [True] * len(train) + [False] * len(test)
        np.testing.assert_array_equal(out[f"{role}/labels"], y_all[rows])
        np.testing.assert_allclose(out[f"{role}/logits"], logits(role, rows), rtol=1e-5, atol=1e-6)
    victim_rows = np.r_[splits["victim/train"], splits["victim/test"]]
    for i, shadow in enumerate(("shadow_0", "shadow_1")):
        np.testing.assert_allclose(out["reference/on_target"][i], logits(shadow, victim_rows), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["reference/on_population"][i], logits(shadow, splits["victim/dev"]),
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["population/labels"], y_all[splits["victim/dev"]])
    np.testing.assert_allclose(out["victim/population_logits"], logits("victim", splits["victim/dev"]),
                               rtol=1e-5, atol=1e-6)
    # shadow 1 seen by both shadows: row 0 is shadow_0 on shadow_1's samples, row 1 shadow_1 itself
    s1_rows = np.r_[splits["shadow_1/train"], splits["shadow_1/test"]]
    np.testing.assert_allclose(out["shadow_1/reference_logits"][0], logits("shadow_0", s1_rows), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["shadow_1/reference_logits"][1], out["shadow_1/logits"])


# ------------------------------------------------------------------ time cost
def test_time_cost_table_is_victim_seconds_by_defense_for_pruned_rows_only():
    """One row per (dataset, model, method, sparsity), one column per defense, the victim's
    fine-tuning seconds in the cells; the unpruned reference row is left out and a missing
    combination is empty. Catches a mean over cells, the reference row counted, rows and columns
    swapped."""
    table = pd.DataFrame([
        {"dataset": "d", "model": "m", "pruning_method": "none", "sparsity": 0.0, "defense": "unpruned",
         "finetune_seconds": 99.0},
        {"dataset": "d", "model": "m", "pruning_method": "l1", "sparsity": 0.6, "defense": "base", "finetune_seconds": 1.5},
        {"dataset": "d", "model": "m", "pruning_method": "l1", "sparsity": 0.6, "defense": "rsw", "finetune_seconds": 2.0},
        {"dataset": "d", "model": "m", "pruning_method": "l1", "sparsity": 0.7, "defense": "base", "finetune_seconds": 3.25},
        {"dataset": "d", "model": "m", "pruning_method": "random", "sparsity": 0.6, "defense": "rsw",
         "finetune_seconds": 7.0},
    ])
    cost = time_cost_table(table)
    assert list(cost.columns) == ["dataset", "model", "pruning_method", "sparsity", "base", "rsw"]
    got = {(r.pruning_method, r.sparsity): (r.base, r.rsw) for r in cost.itertuples()}
    assert set(got) == {("l1", 0.6), ("l1", 0.7), ("random", 0.6)}
    assert got[("l1", 0.6)] == (1.5, 2.0)
    assert got[("l1", 0.7)][0] == 3.25 and math.isnan(got[("l1", 0.7)][1])
    assert math.isnan(got[("random", 0.6)][0]) and got[("random", 0.6)][1] == 7.0
    assert "unpruned" not in cost.columns


# ------------------------------------------------------------------ MLflow
RESULT = {
    "namespace": "l1_unstructured_s60.rmr", "method": "l1_unstructured", "sparsity": 0.6, "variant": "rmr",
    "one_shot": False, "dataset": "mnist1d", "model": "column_fc", "status": "ok", "defense": "rmr",
    "settings": {"tau": 0.6, "w": 12}, "train_acc": 0.9, "test_acc": 0.75, "n_members": 300, "n_nonmembers": 120,
    "finetune_seconds": 4.5, "final_sparsity": 0.6, "epsilon": None, "delta": 1e-5, "tau": 0.6, "n_high": 40,
    "risky_fraction": 0.1, "n_risky": 30, "tau_threshold": 0.55,
    "attacks": {
        "conf": {"balanced_acc": 0.61, "auc": 0.66, "tpr_at_1fpr": 0.02, "tpr_at_0.1fpr": float("nan"),
                 "eps_lb": 0.3, "tpr_high": 0.8, "tpr_low": 0.5},
        "lira": {"balanced_acc": 0.58, "auc": 0.7, "tpr_at_1fpr": 0.05, "tpr_at_0.1fpr": float("nan"),
                 "eps_lb": 0.4, "tpr_high": 0.9, "tpr_low": 0.4},
    },
    "chosen_attack": "lira", "strongest_attack": "conf", "roc": {},
}


def test_child_params_are_the_combination_its_defense_settings_and_what_tau_selected():
    assert child_params(RESULT, seed=7) == {
        "dataset": "mnist1d", "model": "column_fc", "pruning_method": "l1_unstructured", "sparsity": "0.6",
        "defense": "rmr", "variant": "rmr", "status": "ok", "chosen_attack": "lira", "strongest_attack": "conf",
        "seed": "7", "reference": "False", "defense.tau": "0.6", "defense.w": "12", "defense.risky_fraction": "0.1",
        "defense.n_risky": "30", "defense.tau_threshold": "0.55",
    }
    unpruned = {**RESULT, "method": None, "sparsity": None, "chosen_attack": "", "settings": {}}
    p = child_params(unpruned, seed=0)
    assert (p["pruning_method"], p["sparsity"], p["chosen_attack"]) == ("none", "0.0", "")


def test_child_metrics_are_every_finite_figure_the_chosen_attack_again_and_the_max():
    """Every number, NaN and None left out (not measurable / not applicable), each attack's
    metrics under ``<attack>_<metric>``, the chosen attack's again as ``chosen_<metric>``, the
    max balanced accuracy over attacks. Catches the chosen attack's figures taken from another
    attack, a NaN logged, the max taken over AUCs."""
    assert child_metrics(RESULT) == {
        "test_acc": 0.75, "train_acc": 0.9, "n_members": 300.0, "n_nonmembers": 120.0, "n_high": 40.0,
        "finetune_seconds": 4.5, "final_sparsity": 0.6, "delta": 1e-5,
        "conf_balanced_acc": 0.61, "conf_auc": 0.66, "conf_tpr_at_1fpr": 0.02, "conf_eps_lb": 0.3,
        "conf_tpr_high": 0.8, "conf_tpr_low": 0.5,
        "lira_balanced_acc": 0.58, "lira_auc": 0.7, "lira_tpr_at_1fpr": 0.05, "lira_eps_lb": 0.4,
        "lira_tpr_high": 0.9, "lira_tpr_low": 0.4,
        "chosen_balanced_acc": 0.58, "chosen_auc": 0.7, "chosen_tpr_at_1fpr": 0.05, "chosen_eps_lb": 0.4,
        "chosen_tpr_high": 0.9, "chosen_tpr_low": 0.4,
        "max_attack_acc": 0.61,
    }
    dp = {**RESULT, "epsilon": 3.5, "attacks": {}, "chosen_attack": ""}
    m = child_metrics(dp)
    assert m["epsilon"] == 3.5 and "max_attack_acc" not in m and not any(k.startswith("chosen_") for k in m)


class _Client:
    """Records what the hook sends to MLflow."""

    def __init__(self):
        self.runs, self.batches, self.ended = [], [], []

    def create_run(self, exp_id, run_name, tags):
        self.runs.append((exp_id, run_name, tags))
        return type("Run", (), {"info": type("Info", (), {"run_id": f"r{len(self.runs)}"})()})()

    def log_batch(self, run_id, metrics, params):
        self.batches.append((run_id, {m.key: m.value for m in metrics}, {p.key: p.value for p in params}))

    def log_figure(self, *args):
        pass

    def set_terminated(self, run_id, status):
        self.ended.append((run_id, status))


def test_tracking_logs_one_child_run_with_exactly_child_params_and_child_metrics():
    """The hook's child run for a result: named by its namespace under the parent, its params
    and metrics exactly ``child_params`` / ``child_metrics``, finished (or failed, with the
    error as a tag)."""
    from wemem.tracking import MlflowTrackingHook

    hook = MlflowTrackingHook()
    hook.client, hook.parent_id, hook.exp_id, hook.seed = _Client(), "parent", "exp", 7
    hook._log_child(RESULT)
    (exp, name, tags), = hook.client.runs
    assert (exp, name, tags["mlflow.parentRunId"], tags["wemem.namespace"]) == (
        "exp", "rmr · l1_unstructured 60%", "parent", "l1_unstructured_s60.rmr")
    assert (tags["wemem.defense"], tags["wemem.reference"], tags["wemem.seed"]) == ("rmr", "false", "7")
    (rid, metrics, params), = hook.client.batches
    assert metrics == child_metrics(RESULT) and params == child_params(RESULT, 7)
    assert hook.client.ended == [(rid, "FINISHED")] and not hook.failed
    hook._log_child({**RESULT, "namespace": "x", "status": "failed", "error": "boom", "attacks": {}})
    assert hook.client.runs[1][2]["wemem.error"] == "boom"
    assert hook.client.ended[1] == ("r2", "FAILED") and hook.failed
