"""memscore and ranking pipelines run as slices on a DataCatalog; shard structure from params."""

from __future__ import annotations

import numpy as np
import pandas as pd
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from wemem.ml.data import load_dataset, make_splits
from wemem.ml.memorization import MemScoreSettings, export_reference_csv
from wemem.params import DatasetSettings, Ranking
from wemem.pipelines.memscore.nodes import (
    import_memscores,
    make_shard_node,
    merge_memscore_shards,
    summarise_memscores,
)
from wemem.pipelines.ranking.nodes import preview_windows, rank_memscores
from wemem.pipelines.ranking.pipeline import create_pipeline as ranking_pipeline

MEMSCORE = MemScoreSettings(m=4, subset_fraction=0.7, epochs=2, estimator="probability", n_shards=2,
                            batch_size=128, lr=0.001, weight_decay=0.0005, import_csv=None)
DATASET = DatasetSettings(model="column_fc", n_shadows=1, defense_defaults={"w": 10, "s": 2, "tau": 0.6})
INFO = {"name": "mnist1d", "kind": "tabular", "model": "column_fc", "num_classes": 10, "mean": None, "std": None,
        "input_shape": [40], "defense_defaults": {"w": 10, "s": 2, "tau": 0.6}}


def _data(tmp_path):
    raw = load_dataset("mnist1d", tmp_path, num_samples=500, seed=0)
    arrays = {"features": raw.features, "labels": raw.labels, "test_mask": raw.test_mask}
    splits = make_splits(raw.labels, test_mask=raw.test_mask, seed=0, n_shadows=1)
    return arrays, splits


def test_sharded_nodes_merge_into_one_table(tmp_path):
    arrays, splits = _data(tmp_path)
    shards = [make_shard_node(k, 2)(arrays, splits, INFO, DATASET, MEMSCORE, 0, "cpu", False) for k in range(2)]
    table = merge_memscore_shards(arrays, splits, *shards)
    n = len(splits["train_pool"])
    assert list(table.columns) == ["index", "label", "raw_score", "score", "n_in", "n_out"]
    assert len(table) == n and (table["n_in"] + table["n_out"] == 4).all()
    np.testing.assert_array_equal(table["label"], arrays["labels"][splits["train_pool"]])
    assert table["score"].between(0, 1).all()
    summary, _ = summarise_memscores(table, INFO, DATASET, MEMSCORE)
    assert (summary["m"], summary["estimator"], summary["imported"], summary["tau"]) == (4, "probability", False, 0.6)
    assert summary["n"] == n and summary["share_at_or_above_tau"] == float(np.mean(table["score"] >= 0.6))


def test_import_instead_of_estimating(tmp_path):
    arrays, splits = _data(tmp_path)
    n = len(splits["train_pool"])
    table = pd.DataFrame({"index": np.arange(n), "score": np.linspace(0, 1, n)})
    export_reference_csv(table, tmp_path / "scores.csv")
    assert (tmp_path / "scores.csv").read_text().startswith(",0\n")
    imported = import_memscores(arrays, splits, MEMSCORE.model_copy(update={"import_csv": str(tmp_path / "scores.csv")}))
    assert list(imported.columns) == ["index", "label", "raw_score", "score", "n_in", "n_out"]
    np.testing.assert_allclose(imported["score"], np.linspace(0, 1, n))


def test_ranking_pipeline_slice(tmp_path):
    rng = np.random.default_rng(0)
    memscores = pd.DataFrame({"index": np.arange(60), "label": rng.integers(0, 3, 60), "raw_score": rng.random(60)})
    memscores["score"] = memscores["raw_score"]
    window = DATASET.model_copy(update={"defense_defaults": {"w": 4, "s": 3, "tau": 0.5}})
    window = DatasetSettings.model_validate(window.model_dump())
    catalog = DataCatalog({
        "memscores": MemoryDataset(memscores),
        "params:dataset_settings": MemoryDataset(window),
        "params:ranking": MemoryDataset(Ranking(preview_epochs=5)),
    })
    out = SequentialRunner().run(ranking_pipeline(), catalog)
    preview = out["window_preview"].load()
    rankings = rank_memscores(memscores)
    for order in ("h2l", "l2h"):
        part = rankings[rankings["order"] == order]
        assert sorted(part["index"]) == list(range(60))  # complete
        for _, g in part.groupby("label"):
            s = g.sort_values("rank")["score"].to_numpy()
            assert (np.diff(s) <= 0).all() if order == "h2l" else (np.diff(s) >= 0).all()
    whole = preview[preview["epoch"] == -1]
    assert (whole["w"] == 4).all() and (whole["s"] == 3).all()
    assert (whole["window_size"] == np.minimum(whole["class_size"], 4 + 3 * 4)).all()
    direct = preview_windows(rankings, window, Ranking(preview_epochs=5))
    pd.testing.assert_frame_equal(direct, preview)
