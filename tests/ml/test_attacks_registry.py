"""The attack registry and the evaluation glue: settings schemas, a toy attack picked up with no
other file changed, the attack record's keys."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from tests.ml.test_attacks import make_data
from wemem.ml.attacks import (
    ATTACKS,
    AttackContext,
    AttackModelSettings,
    RmiaSettings,
    SamiaSettings,
    run_attacks,
    strongest_attack,
    thinned_roc,
)
from wemem.ml.attacks.base import make_result
from wemem.ml.evaluation import FAILED, MiaEvaluationSettings, attack_data, attack_record
from wemem.ml.grid import Combo
from wemem.ml.reporting import comparison_markdown, comparison_row, comparison_table
from wemem.ml.schema import NonNeg, Section

LABELS = {"conf": "Conf", "entr": "Entr", "mentr": "Mentr", "hconf": "Hconf", "nn": "NN", "top3_nn": "Top3-NN",
          "ci_nn": "CI-NN", "samia": "SAMIA", "lira": "LiRA", "rmia": "RMIA"}
FAMILIES = {"conf": "metric", "entr": "metric", "mentr": "metric", "hconf": "metric", "nn": "classifier",
            "top3_nn": "classifier", "ci_nn": "classifier", "samia": "classifier", "lira": "calibrated",
            "rmia": "calibrated"}


def test_every_attack_is_registered_with_label_family_and_schema():
    assert {n: e.label for n, e in ATTACKS.items()} == LABELS
    assert {n: e.family for n, e in ATTACKS.items()} == FAMILIES
    assert {n: e.settings for n, e in ATTACKS.items() if e.settings} == {"samia": SamiaSettings, "rmia": RmiaSettings}


def test_settings_defaults_are_the_spec_values():
    assert AttackModelSettings().as_dict() == {"epochs": 100, "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4,
                                               "batch_size": 128, "milestones": [50, 75], "dropout": 0.2}
    assert SamiaSettings().as_dict() == {"n_draws": 10, "eps": 1e-3, "width": 64, "layers": 3, "heads": 4,
                                         "max_train": None, "epochs": None}
    assert RmiaSettings().as_dict() == {"a": 0.3, "gamma": 1.0}


def test_mia_settings_fill_in_every_attack_section():
    s = MiaEvaluationSettings.model_validate({"attacks": ["conf", "rmia"], "rmia": {"gamma": 2.0}})
    assert s.settings_of("rmia") == RmiaSettings(a=0.3, gamma=2.0)
    assert s.settings_of("samia") == SamiaSettings()
    assert s.settings_of("conf") is None
    assert s.attack_settings() == {"rmia": RmiaSettings(a=0.3, gamma=2.0)}
    assert s.as_dict()["rmia"] == {"a": 0.3, "gamma": 2.0}
    assert MiaEvaluationSettings.model_validate(s) is s  # Kedro's typed parameter, validated again


def test_mia_settings_report_every_problem_with_its_path():
    with pytest.raises(ValidationError) as info:
        MiaEvaluationSettings.model_validate({
            "attacks": ["conf"], "roc_points": 1, "rmai": {}, "rmia": {"a": 2, "b": 1},
            "samia": {"width": 10, "heads": 4}, "attack_model": {"epochs": 0},
        })
    found = {tuple(e["loc"]): e for e in info.value.errors()}
    assert set(found) == {("roc_points",), ("attack_model", "epochs"), ("rmai",), ("rmia", "a"), ("rmia", "b"),
                          ("samia",)}
    assert found[("rmai",)]["ctx"]["match"] == "rmia"
    assert found[("rmia", "b")]["ctx"]["allowed"] == "a, gamma"
    assert "divisible" in found[("samia",)]["msg"]


@pytest.fixture
def toy_attack():
    """A toy attack with one setting, registered the way a new module would register it."""

    class ToySettings(Section):
        shift: NonNeg = 0.0

    @ATTACKS.register("toy", label="Toy", family="metric", settings=ToySettings)
    def toy(data, ctx: AttackContext):
        value = data.target.probs.max(1) + ctx.settings.shift
        return make_result("toy", value, value >= 0.9, data)

    yield ToySettings
    ATTACKS.remove("toy")


def test_a_new_attack_is_one_registration_plus_its_conf_entry(toy_attack):
    s = MiaEvaluationSettings.model_validate({"attacks": ["conf", "toy"], "toy": {"shift": 0.5}})
    assert s.settings_of("toy") == toy_attack(shift=0.5)
    with pytest.raises(ValidationError, match="shift"):
        MiaEvaluationSettings.model_validate({"attacks": ["toy"], "toy": {"shift": -1}})
    data = make_data(seed=9, n_target=200, n_shadow=100, n_pop=50)
    res = run_attacks(data, s.attacks, s.attack_settings())
    np.testing.assert_allclose(res["toy"].scores, data.target.probs.max(1) + 0.5)
    result = {"dataset": "d", "model": "m", "variant": "base", "status": "ok", "test_acc": 0.5,
              "attacks": {n: r.metrics for n, r in res.items()}}
    table = comparison_table([result])
    assert "| Conf | Toy |" in comparison_markdown(table, s.attacks)
    row = comparison_row(result)  # the metric family's best includes the toy
    assert row["max_metric_attack_acc"] == max(r.metrics["balanced_acc"] for r in res.values())


def test_strongest_attack_and_thinned_roc():
    metrics = {"a": {"balanced_acc": 0.6}, "b": {"balanced_acc": 0.7}, "c": {"balanced_acc": 0.7}}
    assert strongest_attack(metrics) == ("b", 0.7)
    name, acc = strongest_attack({})
    assert name == "" and np.isnan(acc)
    rng = np.random.default_rng(0)
    member = rng.random(5000) < 0.5
    roc = thinned_roc(rng.normal(size=5000) + member, member, n_points=50)
    assert len(roc["fpr"]) <= 2 * 50 + 2 and roc["fpr"][0] == 0.0 and roc["fpr"][-1] == roc["tpr"][-1] == 1.0
    assert np.all(np.diff(roc["fpr"]) >= 0)


def _outputs(data):
    out = {"population/labels": data.population_labels, "victim/population_logits": data.target_on_population,
           "reference/on_target": data.reference_on_target, "reference/on_population": data.reference_on_population}
    for role, o in [("victim", data.target)] + [(f"shadow_{i}", s) for i, s in enumerate(data.shadows)]:
        if role != "victim":
            out[f"{role}/reference_logits"] = data.shadow_references[int(role.split("_")[1])]
        out.update({f"{role}/logits": o.logits, f"{role}/labels": o.labels, f"{role}/member": o.member,
                    f"{role}/sensitivity": o.sensitivity})
    return out


def test_attack_record_keys_and_failed_combination():
    data = make_data(seed=10, n_target=300, n_shadow=200, n_shadows=2, n_pop=80)
    outputs = _outputs(data)
    assert attack_data(outputs).shadows[1].logits is data.shadows[1].logits
    combo = Combo("l1_unstructured", 0.6, "rsw")
    log = {"meta": {"status": "ok", "defense": "rsw", "settings": {"w": 3, "tau": 0.6}},
           "models": {"victim": {"finetune_seconds": 1.5, "final_global_sparsity": 0.6}}}
    settings = MiaEvaluationSettings.model_validate({"attacks": ["hconf", "lira", "rmia"], "roc_points": 20})
    record = attack_record(combo, outputs, log, dataset="mnist1d", model="column_fc", settings=settings,
                           seed=0, device="cpu")
    assert list(record) == ["namespace", "method", "sparsity", "variant", "one_shot", "dataset", "model", "seed", "status",
                            "defense", "settings", "settings_text", "train_acc", "test_acc", "n_members",
                            "n_nonmembers", "finetune_seconds", "final_sparsity", "epsilon", "delta", "tau", "n_high",
                            "attacks", "chosen_attack", "selection", "strongest_attack", "dev_acc",
                            "shadow_test_acc", "shadow_chosen_attack", "shadow_max_attack", "roc"]
    assert (record["n_members"], record["n_nonmembers"]) == (180, 120)
    assert record["chosen_attack"] in ("hconf", "lira", "rmia") and set(record["selection"]) == {"hconf", "lira", "rmia"}
    assert record["model"] == "column_fc" and record["settings_text"] == "tau=0.6; w=3"
    assert list(record["attacks"]) == list(record["roc"]) == ["hconf", "lira", "rmia"]
    failed = attack_record(combo, {FAILED: np.array([1])}, {"meta": {"status": "failed", "error": "boom"}},
                           dataset="mnist1d", model="column_fc", settings=settings, seed=0, device="cpu")
    assert (failed["status"], failed["error"], failed["attacks"]) == ("failed", "boom", {})
    assert pd.DataFrame([comparison_row(failed)])["strongest_attack"].item() == ""


def test_evaluation_library_does_not_import_kedro():
    code = "import sys, wemem.ml.evaluation, wemem.ml.reporting; assert 'kedro' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
