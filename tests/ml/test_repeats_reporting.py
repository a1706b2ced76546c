"""What repeats add to the reports: the interval Markdown, the error-bar scatter and the MLflow
summary metrics, on hand-made rows with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from wemem.ml.aggregate import aggregate_seeds, comparison_agg_markdown, interval_markdown
from wemem.ml.reporting import comparison_row, plot_privacy_utility_seeds
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
    assert summary_run_name("x.base", 3) == "x.base · mean of 3 seeds"
    assert child_run_name(results[0], repeats=True) == "x.base · seed 1"
    assert child_run_name(results[0]) == "x.base"  # without repeats: the namespace, as before


def _agg():
    rows = pd.DataFrame([
        {"dataset": "d", "model": "m", "pruning_method": "l1_unstructured", "sparsity": 0.6, "defense": d,
         "seed": s, "status": "ok", "test_acc": acc, "chosen_acc": c, "max_attack_acc": c + 0.05,
         "finetune_seconds": sec}
        for d, s, acc, c, sec in (("base", 1, 0.80, 0.60, 10.0), ("base", 2, 0.84, 0.64, 12.0),
                                  ("rsw", 1, 0.78, 0.52, 20.0), ("rsw", 2, 0.76, 0.56, 22.0))])
    return aggregate_seeds(rows)


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
    agg = _agg()
    fig = plot_privacy_utility_seeds(agg)
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1  # one pruning setting: one series
    line, caps, (xbars, ybars) = bars[0]
    np.testing.assert_allclose(np.asarray(line.get_xdata(), float), [0.62, 0.54])
    np.testing.assert_allclose(np.asarray(line.get_ydata(), float), [0.82, 0.77])
    xerr = [seg[1, 0] - seg[0, 0] for seg in xbars.get_segments()]
    yerr = [seg[1, 1] - seg[0, 1] for seg in ybars.get_segments()]
    np.testing.assert_allclose(xerr, [2 * 0.02 * math.sqrt(2)] * 2, rtol=1e-9)  # ± std on each side
    np.testing.assert_allclose(yerr, [2 * 0.02 * math.sqrt(2), 2 * 0.01 * math.sqrt(2)], rtol=1e-9)
