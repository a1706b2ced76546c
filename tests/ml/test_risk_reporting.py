"""What τ selected (risky fraction f, n_risky, threshold) travels from RMR/SWMR's summary to the
fine-tuning record, the attack record, the comparison table and the MLflow params."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.ml.test_attacks import make_data
from tests.ml.test_attacks_registry import _outputs
from wemem.ml.defenses import RISK_KEYS, finetune_config, prune_and_finetune
from wemem.ml.evaluation import MiaEvaluationSettings, attack_record
from wemem.ml.grid import Combo
from wemem.ml.models import build_model
from wemem.ml.reporting import comparison_row
from wemem.ml.results import child_params


@pytest.mark.parametrize("defense,settings", [
    ("rmr", {"tau": 0.2, "tau_mode": "fraction"}),
    ("swmr", {"tau": 0.75, "w": 10, "s": 10}),
])
def test_prune_and_finetune_records_what_tau_selected(defense, settings):
    # 40 scores 0, 1/39, …, 1: the top 20% are the 8 highest (threshold 32/39); τ = 0.75 as a
    # value flags the 10 scores ≥ 0.75 (threshold 0.75). Catches: f, n_risky or the threshold
    # missing from the record, or taken from the wrong quantity (e.g. τ itself in fraction mode).
    torch.set_num_threads(1)
    n = 40
    rng = np.random.default_rng(0)
    scores = rng.permutation(np.arange(n) / (n - 1))
    x, y = torch.randn(n, 6), torch.as_tensor(np.arange(n) % 2)
    torch.manual_seed(0)
    _, rec = prune_and_finetune(
        build_model("column_fc", (6,), 2), method="l1_unstructured", final_sparsity=0.5, n_iter=2,
        defense=defense, settings=settings, train=(x, y), dev=(x[:10], y[:10]), scores=scores,
        cfg=finetune_config(epochs=2, batch_size=16, progress=False),
    )
    n_risky, threshold = (8, 32 / 39) if defense == "rmr" else (10, 0.75)
    assert rec["n_risky"] == n_risky and rec["risky_fraction"] == pytest.approx(n_risky / n)
    assert rec["threshold"] == pytest.approx(threshold)
    assert all(s["n_risky"] == n_risky for s in rec["summaries"])
    assert set(RISK_KEYS) <= set(rec)


def test_risk_reaches_attack_record_table_row_and_mlflow_params():
    # Catches: the victim's f / n_risky / threshold lost between the fine-tuning log and the
    # report (or a shadow's used instead), and NaN-free columns for defenses without them.
    data = make_data(seed=10, n_target=200, n_shadow=150, n_shadows=1, n_pop=60)
    combo = Combo("l1_unstructured", 0.6, "rmr")
    risk = {"risky_fraction": 0.055, "n_risky": 11, "threshold": 0.6}
    log = {"meta": {"status": "ok", "defense": "rmr", "settings": {"tau": 0.6}},
           "models": {"victim": {"finetune_seconds": 1.0, "final_global_sparsity": 0.6, **risk},
                      "shadow_0": {"risky_fraction": 0.5, "n_risky": 99, "threshold": 0.1}}}
    settings = MiaEvaluationSettings.model_validate({"attacks": ["conf"], "roc_points": 10})
    record = attack_record(combo, _outputs(data), log, dataset="mnist1d", model="column_fc", settings=settings,
                           seed=0, device="cpu")
    assert (record["risky_fraction"], record["n_risky"], record["tau_threshold"]) == (0.055, 11, 0.6)
    row = comparison_row(record)
    assert (row["risky_fraction"], row["n_risky"], row["tau_threshold"]) == (0.055, 11, 0.6)
    params = child_params(record, seed=0)
    assert (params["defense.risky_fraction"], params["defense.n_risky"], params["defense.tau_threshold"]) == (
        "0.055", "11", "0.6")
    base = {k: v for k, v in record.items() if k not in ("risky_fraction", "n_risky", "tau_threshold")}
    assert np.isnan(comparison_row(base)["risky_fraction"])
    assert not any(k.startswith("defense.risky") for k in child_params(base, seed=0))
