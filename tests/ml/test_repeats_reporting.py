"""What repeats add to the reports: the interval Markdown, the error-bar scatter and the MLflow
summary metrics, on hand-made rows with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from wemem.ml.aggregate import aggregate_seeds, comparison_agg_markdown, interval_markdown
from wemem.ml.reporting import comparison_row, plot_privacy_utility
from wemem.ml.results import child_run_name, summary_metrics, summary_run_name

T975_DF2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (table value)


def _result(ns, variant, seed, test_acc, conf_acc, status="ok"):
    return {"namespace": ns, "method": "l1_unstructured", "sparsity": 0.6, "variant": variant, "defense": variant,
            "dataset": "d", "model": "m", "seed": seed, "status": status, "test_acc": test_acc,
            "attacks": {} if status != "ok" else {"conf": {"balanced_acc": conf_acc, "auc": 0.5}},
            "chosen_attack": "conf" if status == "ok" else None}


def test_comparison_row_carries_the_seed():
    assert comparison_row(_result("l1_unstructured_s60.base", "base", 7, 0.8, 0.6))["seed"] == 7


def test_summary_metrics_are_mean_std_and_t_interval_over_ok_seeds():
    results = [_result("x.base", "base", s, acc, c) for s, acc, c in ((1, 0.5, 0.6), (2, 0.6, 0.7), (3, 0.7, 0.5))]
    results.append(_result("x.base", "base", 4, float("nan"), 0.0, status="failed"))
    params, metrics = summary_metrics(results)["x.base"]
    half = T975_DF2 * 0.1 / math.sqrt(3)
    assert metrics["test_acc_mean"] == pytest.approx(0.6)
    assert metrics["test_acc_std"] == pytest.approx(0.1)
    assert metrics["test_acc_ci_low"] == pytest.approx(0.6 - half)
    assert metrics["test_acc_ci_high"] == pytest.approx(0.6 + half)
    assert metrics["chosen_balanced_acc_mean"] == pytest.approx(0.6)
    assert metrics["n_seeds"] == 3
    assert params["seeds"] == "1 2 3" and params["n_failed"] == "1" and params["defense"] == "base"
    assert summary_run_name(results[0], 3) == "base · l1_unstructured 60% · mean of 3 seeds"
    assert child_run_name(results[0], repeats=True) == "base · l1_unstructured 60% · seed 1"
    assert child_run_name(results[0]) == "base · l1_unstructured 60%"  # without repeats: no seed


def _rows():
    return pd.DataFrame([
        {"dataset": "d", "model": "m", "pruning_method": "l1_unstructured", "sparsity": 0.6, "defense": d,
         "seed": s, "status": "ok", "test_acc": acc, "chosen_acc": c, "max_attack_acc": c + 0.05,
         "finetune_seconds": sec}
        for d, s, acc, c, sec in (("base", 1, 0.80, 0.60, 10.0), ("base", 2, 0.84, 0.64, 12.0),
                                  ("rsw", 1, 0.78, 0.52, 20.0), ("rsw", 2, 0.76, 0.56, 22.0))])


def _agg():
    return aggregate_seeds(_rows())


def test_interval_markdown_cells():
    agg = _agg()
    text = interval_markdown(agg, {"test_acc": "Test", "finetune_seconds": "FT (s)"})
    # base: mean 0.82, std 0.02*sqrt(2)=0.028284; half = 12.7062 * 0.028284 / sqrt(2) = 0.254124
    assert "| base | 82.00 ± 2.83 [56.59, 107.41] | 11.00 ± 1.41 [-1.71, 23.71] | 2 |" in text
    one = aggregate_seeds(pd.DataFrame([{"dataset": "d", "model": "m", "pruning_method": "none", "sparsity": 0.0,
                                         "defense": "unpruned", "seed": 42, "test_acc": 0.9}]))
    assert "| unpruned | 90.00 | 1 |" in interval_markdown(one, {"test_acc": "Test"})
    md = comparison_agg_markdown(agg, ["conf"])
    assert "| dataset | model | pruning | defense | Test Acc (%) |" in md and "l1_unstructured @ 60%" in md


def test_error_bars_are_one_std_over_the_seeds():
    rows = _rows()
    fig = plot_privacy_utility(rows)
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer) and c.lines[2]]
    bars = [b for b in bars if len(b.lines[2][0].get_segments())]  # the legend's proxy has no segments
    assert len(bars) == 2  # base and rsw, each at its mean over the two seeds
    got = {}
    for bar in bars:
        xbars, ybars = bar.lines[2]
        (xseg,), (yseg,) = xbars.get_segments(), ybars.get_segments()
        centre = (round(float(xseg[:, 0].mean()), 6), round(float(yseg[:, 1].mean()), 6))
        got[centre] = (xseg[1, 0] - xseg[0, 0], yseg[1, 1] - yseg[0, 1])
    # base: attack (0.60, 0.64), test (0.80, 0.84); rsw: attack (0.52, 0.56), test (0.78, 0.76)
    assert set(got) == {(0.62, 0.82), (0.54, 0.77)}
    np.testing.assert_allclose(got[(0.62, 0.82)], [2 * 0.02 * math.sqrt(2)] * 2, rtol=1e-9)  # ± std each side
    np.testing.assert_allclose(got[(0.54, 0.77)], [2 * 0.02 * math.sqrt(2), 2 * 0.01 * math.sqrt(2)], rtol=1e-9)


def test_chosen_roc_with_repeats_draws_the_first_seed_only():
    from wemem.ml.figures import chosen_roc_by_combination

    roc = {"conf": {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}}
    results = [{**_result("x.base", "base", s, 0.8, 0.6), "roc": roc, "n_nonmembers": 10} for s in (44, 42, 43)]
    curves = chosen_roc_by_combination(results)
    assert len(curves) == 1 and curves[0]["label"].endswith("(seed 42)")
    single = chosen_roc_by_combination(results[:1])
    assert len(single) == 1 and "seed" not in single[0]["label"]
