"""The whole default pipeline end to end on tiny data, read back through the catalog and MLflow."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from tests.conftest import TINY_PARAMS, make_project, run_session

pytestmark = pytest.mark.slow

DEFENSES = ["base", "rsw", "rmr", "swmr", "ppb", "adv", "dpsgd", "relaxloss"]
ATTACKS = ["conf", "entr", "mentr", "hconf", "nn", "top3_nn", "ci_nn", "samia", "lira", "rmia"]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One run of the whole default pipeline, shared by the tests of this module."""
    project = make_project(tmp_path_factory.mktemp("default_run"))
    run_session(project, runtime_params=copy.deepcopy(TINY_PARAMS))
    return project


def _latest(path):
    versions = sorted(p for p in path.iterdir() if p.is_dir())
    return versions[-1] / path.name


def test_default_run_writes_table_and_plots(default_run):
    reporting = default_run / "data" / "08_reporting"
    table = pd.read_csv(_latest(reporting / "defense_comparison.csv"))
    assert list(table["defense"]) == ["unpruned", "one_shot", *DEFENSES]
    assert (table["status"] == "ok").all()
    for attack in ATTACKS:
        assert table[f"{attack}_acc"].between(0, 1).all()
        assert table[f"{attack}_auc"].between(0, 1).all()
    assert table["max_attack_acc"].equals(table[[f"{a}_acc" for a in ATTACKS]].max(axis=1))
    pruned = table[table["pruning_method"] != "none"]
    assert pruned["final_sparsity"].between(0.59, 0.61).all()
    assert (pruned["finetune_seconds"] > 0).all()
    assert table.loc[table["defense"] == "dpsgd", "epsilon"].gt(0).all()
    assert table["chosen_attack"].isin(list(ATTACKS)).all()
    assert (table["chosen_acc"] <= table["max_attack_acc"]).all()  # the max is an upper bound
    assert (table["n_nonmembers"] > 0).all() and table["tau"].eq(0.6).all()
    small = table["n_nonmembers"] < 1000  # no 0.1% figure without 1,000 non-members
    assert table.loc[small, [f"{a}_tpr_at_0.1fpr" for a in ATTACKS]].isna().all().all()
    markdown = _latest(reporting / "defense_comparison.md").read_text()
    assert "| Data & Model |" in markdown and "rsw" in markdown and "Chosen attack" in markdown
    assert not small.any() or "n/m¹" in markdown
    for plot in ("privacy_utility.png", "roc_curves.png", "memorisation_slices.png"):
        assert _latest(reporting / plot).stat().st_size > 10_000
    page = _latest(reporting / "report.html").read_text()  # the one-page report, answer first
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 3
    assert page.index('id="answer"') < page.index('id="comparison"')
    assert ("is the best defense within a 2-point" in page) or ("No defense beats Base" in page)


def test_mlflow_child_runs_hold_params_and_metrics(default_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{default_run / 'mlflow.db'}")
    exp = client.get_experiment_by_name("wemem")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    by_name = {r.data.tags["wemem.namespace"]: r for r in children}
    assert set(by_name) == {"unpruned", "l1_unstructured_s60.one_shot", *[f"l1_unstructured_s60.{d}" for d in DEFENSES]}
    rsw = by_name["l1_unstructured_s60.rsw"].data
    assert rsw.params["dataset"] == "mnist1d"
    assert rsw.params["pruning_method"] == "l1_unstructured"
    assert float(rsw.params["sparsity"]) == 0.6
    assert rsw.params["defense"] == "rsw"
    assert rsw.params["defense.w"] == "12" and rsw.params["defense.order"] == "l2h"
    for key in ("test_acc", "max_attack_acc", "finetune_seconds", "n_members", "n_nonmembers",
                "chosen_balanced_acc", "chosen_eps_lb", "chosen_tpr_high", "chosen_tpr_low"):
        assert key in rsw.metrics
    assert rsw.params["chosen_attack"] in list(ATTACKS)
    # 0.1% FPR is below the 1/n_nonmembers resolution on mnist1d (< 1,000 non-members): not logged
    measurable_01 = rsw.metrics["n_nonmembers"] >= 1000
    for attack in ATTACKS:
        for metric in ("balanced_acc", "auc", "tpr_at_1fpr", "eps_lb", "tpr_high", "tpr_low"):
            assert f"{attack}_{metric}" in rsw.metrics
        assert (f"{attack}_tpr_at_0.1fpr" in rsw.metrics) == measurable_01
    dp = by_name["l1_unstructured_s60.dpsgd"].data.metrics
    assert "epsilon" in dp and 0 <= dp["chosen_eps_lb"] <= dp["epsilon"]
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"privacy_utility_plot.png", "roc_curves_plot.png", "defense_comparison.csv", "report_html.html"} <= artifacts
    # issue 15: children lead with the defense, references are tagged, the parent holds the answer
    names = {r.data.tags["wemem.namespace"]: r.info.run_name for r in children}
    assert names["l1_unstructured_s60.rsw"] == "rsw · l1_unstructured 60%" and names["unpruned"] == "unpruned"
    one_shot = by_name["l1_unstructured_s60.one_shot"].data
    assert one_shot.tags["wemem.reference"] == "true" and one_shot.params["defense"] == "one_shot"
    parent = parents[0].data
    best = parent.tags["wemem.best_defense"]
    assert best in DEFENSES and parents[0].info.run_name.startswith(f"mnist1d · best: {best} · ")
    assert parent.tags["mlflow.note.content"].startswith("**")
    assert {"best_chosen_attack_acc", "best_test_acc", "base_chosen_attack_acc", "base_test_acc"} <= set(parent.metrics)


def test_notebook_executes_against_the_run(default_run):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.read(default_run / "notebooks" / "wemem_analysis.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(default_run / "notebooks")}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
