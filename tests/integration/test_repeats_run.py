"""Repeats end to end: a 2-seed, 2-combination run on tiny data, read back from disk and MLflow.

The aggregated table and the MLflow summaries are checked against numpy on the per-seed rows,
with Student's t quantile for one degree of freedom taken from the table (12.7062), not from
the code under test."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from tests.conftest import TINY_PARAMS, make_project, run_session

pytestmark = pytest.mark.slow

SEEDS = [5, 9]
DEFENSES = ["base", "rsw"]
ATTACKS = ["conf", "entr", "nn"]
T975_DF1 = 12.706204736174707  # Student's t, 97.5% quantile, 1 degree of freedom
PARAMS = {
    **copy.deepcopy(TINY_PARAMS),
    "repeats": {"seeds": SEEDS},
    "pruning_defense": {**TINY_PARAMS["pruning_defense"],
                        "grid": {"defenses": DEFENSES}, "reference": {"unpruned": False, "one_shot": False}},
    "mia_evaluation": {**TINY_PARAMS["mia_evaluation"], "attacks": ATTACKS},
}
NAMESPACES = [f"l1_unstructured_s60.{d}" for d in DEFENSES]


@pytest.fixture(scope="module")
def repeats_run(tmp_path_factory):
    from wemem import structure

    saved = structure._config_loader, structure._built_for
    project = make_project(tmp_path_factory.mktemp("repeats_run"))
    try:
        run_session(project, runtime_params=copy.deepcopy(PARAMS))
    finally:
        structure._config_loader, structure._built_for = saved
    return project


def _latest(path):
    return sorted(p for p in path.iterdir() if p.is_dir())[-1] / path.name


def _known_stats(values):
    values = np.asarray(values, dtype=float)
    mean, std = values.mean(), values.std(ddof=1)
    half = T975_DF1 * std / np.sqrt(values.size)
    return mean, std, mean - half, mean + half


def test_table_keeps_a_row_per_combination_and_seed(repeats_run):
    reporting = repeats_run / "data" / "08_reporting"
    table = pd.read_csv(_latest(reporting / "defense_comparison.csv"))
    assert list(zip(table["defense"], table["seed"])) == [(d, s) for d in DEFENSES for s in SEEDS]
    assert (table["status"] == "ok").all()
    # the repeats differ: each seed made its own splits and models
    splits = [np.load(_latest(repeats_run / "data" / "02_intermediate" / "mnist1d" / f"seed{s}" / "splits.npz"))
              for s in SEEDS]
    assert any(not np.array_equal(splits[0][k], splits[1][k]) for k in splits[0].files)
    # and nothing was written where a run without repeats writes
    assert not (repeats_run / "data" / "02_intermediate" / "mnist1d" / "splits.npz").exists()
    assert not (repeats_run / "data" / "06_models" / "mnist1d" / "original_models.pt").exists()
    for s in SEEDS:
        for ns in NAMESPACES:
            assert (repeats_run / "data" / "07_model_output" / "mnist1d" / f"seed{s}" / ns / "attack_results.json").is_dir()


def test_aggregated_table_equals_numpy_on_the_per_seed_rows(repeats_run):
    reporting = repeats_run / "data" / "08_reporting"
    table = pd.read_csv(_latest(reporting / "defense_comparison.csv"))
    agg = pd.read_csv(_latest(reporting / "defense_comparison_agg.csv"))
    assert list(agg["defense"]) == DEFENSES
    assert (agg["n_seeds"] == 2).all() and (agg["n_failed"] == 0).all()
    metrics = ["test_acc", "train_acc", "chosen_acc", "max_attack_acc", *[f"{a}_acc" for a in ATTACKS],
               *[f"{a}_auc" for a in ATTACKS], "finetune_seconds"]
    for defense in DEFENSES:
        rows, out = table[table["defense"] == defense], agg[agg["defense"] == defense].iloc[0]
        for metric in metrics:
            mean, std, lo, hi = _known_stats(rows[metric])
            got = [out[f"{metric}_{k}"] for k in ("mean", "std", "ci_low", "ci_high")]
            assert got == pytest.approx([mean, std, lo, hi], rel=1e-9, abs=1e-12), (defense, metric)
    markdown = _latest(reporting / "defense_comparison_agg.md").read_text()
    base = agg[agg["defense"] == "base"].iloc[0]
    cell = (f"{100 * base['test_acc_mean']:.2f} ± {100 * base['test_acc_std']:.2f} "
            f"[{100 * base['test_acc_ci_low']:.2f}, {100 * base['test_acc_ci_high']:.2f}]")
    assert cell in markdown and "95% confidence interval" in markdown
    assert _latest(reporting / "privacy_utility.png").stat().st_size > 10_000  # the error-bar scatter


def test_mlflow_children_per_seed_and_one_summary_per_combination(repeats_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repeats_run / 'mlflow.db'}")
    exp = client.get_experiment_by_name("wemem")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].data.params["seeds"] == "5 9"
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    children = [r for r in kids if r.data.tags.get("wemem.summary") != "true"]
    summaries = {r.data.tags["wemem.namespace"]: r for r in kids if r.data.tags.get("wemem.summary") == "true"}
    assert sorted((r.data.tags["wemem.namespace"], r.data.params["seed"]) for r in children) == \
        [(ns, str(s)) for ns in NAMESPACES for s in SEEDS]
    assert all(f"seed {r.data.params['seed']}" in r.info.run_name for r in children)
    assert set(summaries) == set(NAMESPACES)
    for ns, summary in summaries.items():
        per_seed = [r.data.metrics for r in children if r.data.tags["wemem.namespace"] == ns]
        assert summary.data.metrics["n_seeds"] == 2
        assert summary.data.params["seeds"] == "5 9" and summary.info.status == "FINISHED"
        for metric in ("test_acc", "max_attack_acc", "chosen_balanced_acc", "conf_auc"):
            mean, std, lo, hi = _known_stats([m[metric] for m in per_seed])
            got = [summary.data.metrics[f"{metric}_{k}"] for k in ("mean", "std", "ci_low", "ci_high")]
            assert got == pytest.approx([mean, std, lo, hi], rel=1e-9, abs=1e-12), (ns, metric)


def test_a_repeat_equals_a_run_without_repeats_at_that_seed(repeats_run, tmp_path):
    # what it catches: a repeat's node still reading the top-level seed (42)
    from wemem import structure

    saved = structure._config_loader, structure._built_for
    project = make_project(tmp_path / "single")
    params = {**copy.deepcopy(TINY_PARAMS), "seed": SEEDS[1]}
    try:
        run_session(project, pipelines=["data_ingestion"], runtime_params=params)
    finally:
        structure._config_loader, structure._built_for = saved
    single = np.load(_latest(project / "data" / "02_intermediate" / "mnist1d" / "splits.npz"))
    repeat = np.load(_latest(repeats_run / "data" / "02_intermediate" / "mnist1d" / f"seed{SEEDS[1]}" / "splits.npz"))
    assert single.files == repeat.files
    for key in single.files:
        assert np.array_equal(single[key], repeat[key]), key
