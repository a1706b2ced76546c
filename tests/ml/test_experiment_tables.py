"""The paper's layouts pivot the per-seed comparison table; every cell is numpy's mean ± std."""

from __future__ import annotations

import numpy as np
import pandas as pd

from wemem.ml.experiment_tables import LAYOUTS, experiment_table

ATTACKS = ["conf", "nn"]


def _row(variant, dtype, settings, seed, test, conf, nn, secs, method="l1_unstructured", sparsity=0.6):
    return {"dataset": "location", "model": "column_fc", "pruning_method": method, "sparsity": sparsity,
            "defense": variant, "defense_type": dtype, "status": "ok", "seed": seed, "test_acc": test,
            "conf_acc": conf, "nn_acc": nn, "max_attack_acc": max(conf, nn), "chosen_acc": conf,
            "chosen_attack": "conf", "finetune_seconds": secs, "settings": settings}


def _table():
    rows = []
    for seed, d in ((42, 0.0), (43, 0.02)):
        rows += [
            _row("unpruned", "base", "", seed, 0.70, 0.60, 0.55, 0.1, method="none", sparsity=0.0),
            _row("base", "base", "lambda_g=0.0005", seed, 0.62 + d, 0.80 - d, 0.75, 10.0 + 10 * d),
            _row("rmr_lambda_r_0p01", "rmr", "lambda_g=0.0005; lambda_r=0.01; tau=0.6", seed, 0.61, 0.78 + d, 0.7, 11),
            _row("rmr_lambda_r_1", "rmr", "lambda_g=0.0005; lambda_r=1; tau=0.6", seed, 0.50, 0.55, 0.52 + d, 12),
            _row("rsw_w_15_s_1_order_h2l", "rsw", "order=h2l; s=1; w=15", seed, 0.60, 0.6 + d, 0.58, 4),
            _row("rsw_w_15_s_3_order_h2l", "rsw", "order=h2l; s=3; w=15", seed, 0.59, 0.57, 0.56, 3),
        ]
    return pd.DataFrame(rows)


def test_rmr_lambda_layout_known_answers():
    # what it catches: a cell that is not numpy's mean ± sample std, λ_r rows out of order, the
    # unpruned row leaking into the pruned table, or a sweep point missing
    md = experiment_table(_table(), "rmr_lambda", ATTACKS)
    base_conf = np.array([0.80, 0.78]) * 100
    assert f"{base_conf.mean():.2f} ± {base_conf.std(ddof=1):.2f}" in md  # 79.00 ± 1.41
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in lines] == ["| λ_r", "| Base", "| 0.01", "| 1"]
    assert lines[2].split(" | ")[1] == "61.00 ± 0.00" and "2 seed(s)" in md and "unpruned" not in md


def test_windows_time_cost_and_other_layouts_build():
    t = _table()
    md = experiment_table(t, "windows", ATTACKS)
    assert "| RSW | H→L | 15 | 60.00 ± 0.00 | 61.00 ± 1.41 | 59.00 ± 0.00 | 57.00 ± 0.00 |" in md
    cost = experiment_table(t, "time_cost", ATTACKS)
    secs = np.array([10.0, 10.2])
    assert f"{secs.mean():.1f} ± {secs.std(ddof=1):.1f} s" in cost and "0.40×" in cost  # rsw s=1: 4 / 10.1
    for layout in LAYOUTS:
        assert experiment_table(t, layout, ATTACKS).startswith("# ")
        assert experiment_table(t[t["seed"] == 42].drop(columns="seed"), layout, ATTACKS).count("±") == 0
    assert "No experiment layout" in experiment_table(t, None, ATTACKS)
    lines = [x for x in experiment_table(t, "defenses", ATTACKS).splitlines() if x.startswith("| ")]
    assert lines[1].startswith("| unpruned | — (unpruned) | 70.00 ± 0.00 | Conf |") and lines[2].startswith("| base |")
