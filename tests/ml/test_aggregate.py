"""Repeats aggregated over seeds: mean, std and the 95% t interval against numpy/scipy by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from wemem.ml.aggregate import aggregate_seeds, mean_std_markdown


def _rows():
    keys = dict(dataset="toy", model="m", pruning_method="l1_unstructured", sparsity=0.6)
    return pd.DataFrame([
        {**keys, "defense": "base", "seed": 1, "status": "ok", "test_acc": 0.60, "max_attack_acc": 0.70},
        {**keys, "defense": "base", "seed": 2, "status": "ok", "test_acc": 0.62, "max_attack_acc": 0.74},
        {**keys, "defense": "base", "seed": 3, "status": "ok", "test_acc": 0.64, "max_attack_acc": 0.78},
        {**keys, "defense": "rsw", "seed": 1, "status": "ok", "test_acc": 0.61, "max_attack_acc": 0.60},
        {**keys, "defense": "rsw", "seed": 2, "status": "failed", "test_acc": np.nan, "max_attack_acc": np.nan},
    ])


def test_mean_std_and_interval_equal_the_hand_computation():
    # base: attack 0.70, 0.74, 0.78 → mean 0.74, std 0.04 (ddof 1), half-width t(0.975, 2)·0.04/√3
    # = 4.302653·0.023094 = 0.099364. catches: ddof 0, a z instead of a t quantile, failed rows
    # counted, groups mixed
    agg = aggregate_seeds(_rows()).set_index("defense")
    base = agg.loc["base"]
    assert base["n_seeds"] == 3 and base["n_failed"] == 0 and base["seeds"] == "1 2 3"
    assert base["max_attack_acc_mean"] == pytest.approx(0.74)
    assert base["max_attack_acc_std"] == pytest.approx(np.std([0.70, 0.74, 0.78], ddof=1)) == pytest.approx(0.04)
    assert base["max_attack_acc_ci_high"] - 0.74 == pytest.approx(4.302653 * 0.04 / math.sqrt(3), rel=1e-6)
    assert base["max_attack_acc_ci_low"] == pytest.approx(0.74 - 0.0993647, abs=1e-6)
    rsw = agg.loc["rsw"]
    assert rsw["n_seeds"] == 1 and rsw["n_failed"] == 1 and rsw["test_acc_mean"] == pytest.approx(0.61)
    assert math.isnan(rsw["test_acc_std"]) and math.isnan(rsw["test_acc_ci_low"])  # one seed: no spread
    assert "seed_mean" not in agg.columns and "sparsity_mean" not in agg.columns


def test_markdown_cells_read_mean_plus_minus_std():
    agg = aggregate_seeds(_rows())
    md = mean_std_markdown(agg, {"max_attack_acc": "Max attack (%)"})
    assert "| base | 74.00 ± 4.00 | 3 |" in md and "| rsw | 60.00 | 1 |" in md


def test_rows_without_a_seed_column_are_refused_by_name():
    with pytest.raises(ValueError, match="lack column.*seed"):
        aggregate_seeds(_rows().drop(columns="seed"))


def test_seconds_stay_in_seconds_in_the_markdown():
    rows = _rows()
    rows["finetune_seconds"] = [1.0, 2.0, 3.0, 4.0, np.nan]
    md = mean_std_markdown(aggregate_seeds(rows), {"finetune_seconds": "FT (s)"})
    assert "| base | 2.00 ± 1.00 | 3 |" in md


def _seeded_table():
    rows = _rows()
    rows["chosen_acc"] = [0.66, 0.70, 0.80, 0.58, np.nan]
    rows["chosen_attack"] = ["conf", "mentr", "mentr", "nn", ""]
    rows["dev_acc"] = [0.59, 0.61, 0.63, 0.60, np.nan]
    rows["shadow_max_attack"] = [0.71, 0.72, 0.73, 0.65, np.nan]
    rows["defense_type"] = ["base", "base", "base", "rsw", "rsw"]
    return rows


def test_text_columns_carry_the_modal_value_of_the_successful_seeds():
    agg = aggregate_seeds(_seeded_table()).set_index("defense")
    assert agg.loc["base", "chosen_attack"] == "mentr"  # mentr twice, conf once (and first): the mode, not the first
    assert agg.loc["rsw", "chosen_attack"] == "nn"  # the failed seed's "" is not counted
    assert agg.loc["rsw", "defense_type"] == "rsw"


def test_answer_select_layouts_and_plot_read_the_same_means():
    # one mean over seeds for every reader: base's chosen attack 0.66, 0.70, 0.80 → 0.72 (std 0.0721),
    # test 0.62; rsw one seed: its std is NaN, never 0
    from wemem.ml.answer import _means as answer_means
    from wemem.ml.experiment_tables import aggregated
    from wemem.ml.select import _means as select_means

    table = _seeded_table()
    ans = answer_means(table).set_index("defense")
    assert ans.loc["base", "attack_acc"] == pytest.approx(0.72)
    assert ans.loc["base", "attack_acc_std"] == pytest.approx(np.std([0.66, 0.70, 0.80], ddof=1))
    assert ans.loc["base", "test_acc"] == pytest.approx(0.62) and ans.loc["base", "n_seeds"] == 3
    assert math.isnan(ans.loc["rsw", "attack_acc_std"]) and ans.loc["rsw", "n_seeds"] == 1
    assert ans.loc["base", "chosen_attack"] == "mentr"
    sel = select_means(table, ["dev_acc", "shadow_max_attack", "missing"]).set_index("defense")
    assert sel.loc["base", "dev_acc"] == pytest.approx(0.61)
    assert sel.loc["base", "shadow_max_attack"] == pytest.approx(0.72)
    assert math.isnan(sel.loc["base", "missing"])
    lay = aggregated(table).set_index("defense")
    assert lay.loc["base", "chosen_acc_mean"] == pytest.approx(0.72) and lay.loc["base", "chosen_attack"] == "mentr"


def test_rows_of_a_run_without_repeats_count_as_one_seed_each():
    rows = _rows().assign(seed=np.nan)  # a single run's table: no seed
    agg = aggregate_seeds(rows.iloc[[0, 3]]).set_index("defense")
    assert agg.loc["base", "n_seeds"] == 1 and agg.loc["rsw", "n_seeds"] == 1
    assert agg.loc["base", "test_acc_mean"] == pytest.approx(0.60)


def test_paired_deltas_subtract_base_at_the_same_seed():
    # rsw − base per seed: test 0.61−0.60 = +0.01 (seed 1); seed 2 failed → one pair, std NaN.
    # A second defense with three seeds: attack 0.66−0.70, 0.70−0.74, 0.80−0.78 = −0.04, −0.04, +0.02
    # → mean −0.02, std 0.034641 (ddof 1). catches: unpaired means, the wrong seed, failed rows kept
    from wemem.ml.aggregate import comparison_agg_markdown, comparison_aggregate, paired_deltas

    rows = _rows()
    keys = dict(dataset="toy", model="m", pruning_method="l1_unstructured", sparsity=0.6)
    rows = pd.concat([rows, pd.DataFrame([
        {**keys, "defense": "rmr", "seed": s, "status": "ok", "test_acc": t, "max_attack_acc": a}
        for s, t, a in [(3, 0.64, 0.80), (1, 0.58, 0.66), (2, 0.63, 0.70)]])], ignore_index=True)
    d = paired_deltas(rows, "base", ["test_acc", "max_attack_acc"]).set_index("defense")
    assert "base" not in d.index
    assert d.loc["rsw", "n_pairs"] == 1 and d.loc["rsw", "delta_test_acc_mean"] == pytest.approx(0.01)
    assert math.isnan(d.loc["rsw", "delta_test_acc_std"])
    assert d.loc["rmr", "n_pairs"] == 3
    assert d.loc["rmr", "delta_max_attack_acc_mean"] == pytest.approx(-0.02)
    assert d.loc["rmr", "delta_max_attack_acc_std"] == pytest.approx(np.std([-0.04, -0.04, 0.02], ddof=1))
    assert d.loc["rmr", "delta_test_acc_mean"] == pytest.approx(np.mean([-0.02, 0.01, 0.0]))
    md = comparison_agg_markdown(comparison_aggregate(rows), [])
    paired = md.split("paired by seed")[1]
    rmr = next(line for line in paired.splitlines() if "| rmr |" in line)
    assert "| -2.00 ± 3.46 [" in rmr and rmr.endswith("| 3 |")  # Δ max attack in points, 3 pairs


def test_paired_deltas_without_a_pair_is_empty_and_the_aggregate_keeps_its_rows():
    # what it catches: a run where only the unpruned reference and Base succeeded (every other
    # combination failed) crashing the reports: nothing pairs with Base, so there are no deltas
    from wemem.ml.aggregate import comparison_aggregate, paired_deltas

    rows = _rows().iloc[[0, 4]]  # base seed 1 ok, rsw seed 2 failed
    unpruned = {**rows.iloc[0].to_dict(), "defense": "unpruned", "pruning_method": "none", "sparsity": 0.0}
    rows = pd.concat([rows, pd.DataFrame([unpruned])], ignore_index=True)
    assert paired_deltas(rows).empty
    agg = comparison_aggregate(rows)
    assert list(agg["defense"]) == ["base", "rsw", "unpruned"] and "n_pairs" not in agg
