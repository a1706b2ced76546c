"""Feldman–Zhang memorisation scores (SPEC §4): estimator behaviour, sharding, CSV import/export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
import torch
import yaml

from benchmarks.reference.memscore_loop import baseline_loop
from wemem.ml import memorization
from wemem.ml.memorization import (
    MemScoreSettings,
    ShardStats,
    estimate_pool_shard,
    estimate_shard,
    export_reference_csv,
    import_reference_csv,
    merge_shards,
    scores_table,
    shard_model_ids,
    subset_mask,
    summarise_scores,
    train_pool,
)
from wemem.ml.memorization.ensemble import dropout_masks
from wemem.ml.memorization.sparse import PoolCSR, SparseFirstLayer
from wemem.ml.train import resolve_device

from tests.conftest import REPO

N_CLASSES = 3
PROTO_FEATURES = 30
N_MISLABELED = 6
UNIQUE_PER_SINGLETON = 5


def _toy() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Typical points (duplicated class prototypes) plus mislabeled singletons.

    Each class owns 10 of the first 30 features; typical points are exact copies of their class's
    prototype. A mislabeled singleton is a prototype of class ``a`` plus 5 features only it has,
    labelled ``a + 1``: a model can only get it right by memorising it.
    Returns (features, labels, typical mask, mislabeled mask).
    """
    d = PROTO_FEATURES + N_MISLABELED * UNIQUE_PER_SINGLETON
    rows, labels = [], []
    for c in range(N_CLASSES):
        proto = np.zeros(d, dtype=np.float32)
        proto[c * 10 : (c + 1) * 10] = 1
        for _ in range(30):
            rows.append(proto)
            labels.append(c)
    for i in range(N_MISLABELED):
        a = i % N_CLASSES
        row = np.zeros(d, dtype=np.float32)
        row[a * 10 : (a + 1) * 10] = 1
        start = PROTO_FEATURES + i * UNIQUE_PER_SINGLETON
        row[start : start + UNIQUE_PER_SINGLETON] = 1
        rows.append(row)
        labels.append((a + 1) % N_CLASSES)
    x = np.stack(rows)
    y = np.asarray(labels, dtype=np.int64)
    mislabeled = np.zeros(len(y), dtype=bool)
    mislabeled[-N_MISLABELED:] = True
    return x, y, ~mislabeled, mislabeled


def _cfg(**kw) -> MemScoreSettings:
    base = dict(m=12, subset_fraction=0.5, epochs=40, batch_size=16, lr=3e-3, weight_decay=0.0)
    base.update(kw)
    return MemScoreSettings(**base)


RUN = dict(arch="column_fc", seed=3, device="cpu", progress=False)  # the run values: model, seed, device


def _estimate(x, y, ids, cfg, **kw):
    return estimate_shard(x, y, ids, cfg, **{**RUN, "num_classes": N_CLASSES, **kw})


@pytest.fixture(scope="module")
def toy():
    return _toy()


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------
# configuration and helpers
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"m": 1}, "an integer >= 2"),
        ({"subset_fraction": 0.0}, r"\(0, 1\)"),
        ({"subset_fraction": 1.0}, r"\(0, 1\)"),
        ({"subset_fraction": 1.5}, r"\(0, 1\)"),
        ({"estimator": "loss"}, "unknown estimator"),
        ({"first_layer": "csr"}, "unknown first_layer"),
        ({"models_per_chunk": 0}, "an integer >= 1"),
        ({"converge_every": 0}, "an integer >= 1"),
        ({"converge_check_rows": 0}, "an integer >= 1"),
        ({"epochs_": 3}, "Extra inputs"),
    ],
)
def test_settings_reject_bad_values(kw, match):
    with pytest.raises(pydantic.ValidationError, match=match):
        MemScoreSettings(**kw)


def test_settings_hold_exactly_the_parameter_file_keys_plus_speed_settings():
    conf = yaml.safe_load((REPO / "conf" / "base" / "parameters_memscore.yml").read_text())["memscore"]
    speed = {"models_per_chunk", "first_layer", "sparse_threshold", "converge_acc", "converge_every",
             "converge_check_rows"}
    assert set(MemScoreSettings.model_fields) == set(conf) | speed
    MemScoreSettings.model_validate(conf)


@pytest.mark.parametrize("m, n_shards", [(64, 1), (64, 3), (10, 4), (5, 5), (7, 3)])
def test_shard_model_ids_partition(m, n_shards):
    ids = [shard_model_ids(m, n_shards, s) for s in range(n_shards)]
    flat = [i for block in ids for i in block]
    assert flat == list(range(m))
    with pytest.raises(ValueError, match="outside"):
        shard_model_ids(m, n_shards, n_shards)


def test_subset_mask_is_seeded_and_sized():
    a = subset_mask(1000, 0.7, seed=1, model_id=5)
    assert a.sum() == 700
    assert np.array_equal(a, subset_mask(1000, 0.7, seed=1, model_id=5))
    assert not np.array_equal(a, subset_mask(1000, 0.7, seed=1, model_id=6))
    assert not np.array_equal(a, subset_mask(1000, 0.7, seed=2, model_id=5))


def test_shardstats_dict_round_trip():
    s = ShardStats(np.arange(4.0), np.arange(4), np.ones(4), np.full(4, 2), model_ids=[3, 4],
                   epochs_run=[10, 12], seconds=1.5)
    back = ShardStats.from_dict(s.to_dict())
    for f in ("in_sum", "in_count", "out_sum", "out_count"):
        assert np.array_equal(getattr(back, f), getattr(s, f))
    assert back.model_ids == [3, 4] and back.epochs_run == [10, 12] and back.seconds == 1.5


def test_dropout_masks_rate_and_model_independence():
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    masks = dropout_masks(gens, 512, (256, 128), 0.1, torch.device("cpu"))
    assert [tuple(m.shape) for m in masks] == [(2, 512, 256), (2, 512, 128)]
    dropped = float(sum((m == 0).sum() for m in masks)) / (2 * 512 * 384)
    assert 0.09 < dropped < 0.11
    values = torch.unique(masks[0]).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.9)
    # model 2's masks alone equal its masks drawn beside model 1
    alone = dropout_masks([torch.Generator().manual_seed(2)], 512, (256, 128), 0.1, torch.device("cpu"))
    assert torch.equal(alone[0][0], masks[0][1]) and torch.equal(alone[1][0], masks[1][1])


def test_sparse_first_layer_matches_dense_forward_and_gradient():
    rng = np.random.default_rng(0)
    x = torch.as_tensor((rng.random((50, 20)) < 0.2).astype(np.float32))
    x[:, 3] *= 2.5  # non-binary values take the weighted path
    csr = PoolCSR(x)
    rows = torch.as_tensor(rng.integers(0, 50, size=(3, 8)))
    w = torch.randn(3, 20, 7, dtype=torch.float32, requires_grad=True)
    sparse = SparseFirstLayer.apply(w.reshape(-1, 7), csr.batch(rows)).view(3, 8, 7)
    dense = torch.bmm(x[rows], w)
    assert torch.allclose(sparse, dense, atol=1e-5)
    g = torch.randn(3, 8, 7)
    (gs,) = torch.autograd.grad(sparse, w, g)
    (gd,) = torch.autograd.grad(dense, w, g)
    assert torch.allclose(gs, gd, atol=1e-5)


# ------------------------------------------------------------------------------------------
# the estimator
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["correctness", "probability"])
def test_mislabeled_singletons_score_high_typical_points_low(toy, estimator):
    x, y, typical, mislabeled = toy
    cfg = _cfg(estimator=estimator)
    stats = _estimate(x, y, range(cfg.m), cfg)
    table = scores_table(stats, y)
    assert list(table.columns) == ["index", "label", "raw_score", "score", "n_in", "n_out"]
    assert np.all(table["n_in"] + table["n_out"] == cfg.m)
    raw = table["raw_score"].to_numpy()
    assert np.isfinite(raw).all()
    assert raw[mislabeled].min() > 0.5, raw[mislabeled]
    assert np.abs(raw[typical]).max() < 0.1
    assert table["score"].between(0, 1).all()
    assert table["score"][mislabeled].min() > table["score"][typical].max()


@pytest.mark.parametrize("first_layer", ["dense", "sparse"])
def test_merged_shards_equal_unsharded_run(toy, first_layer):
    x, y, _, _ = toy
    cfg = _cfg(m=9, epochs=12, first_layer=first_layer, models_per_chunk=4, estimator="probability")
    full = _estimate(x, y, range(cfg.m), cfg)
    shards = [_estimate(x, y, ids, cfg) for ids in ([0, 1], [2, 3, 4, 5, 6], [7, 8])]
    merged = merge_shards(shards[::-1])
    assert merged.model_ids == list(range(cfg.m))
    assert np.array_equal(merged.in_count, full.in_count)
    assert np.array_equal(merged.out_count, full.out_count)
    assert np.all(merged.in_count + merged.out_count == cfg.m)
    np.testing.assert_allclose(merged.in_sum, full.in_sum, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(merged.out_sum, full.out_sum, rtol=1e-6, atol=1e-9)
    assert sorted(merged.epochs_run) == sorted(full.epochs_run)


def test_dense_and_sparse_first_layer_agree(toy):
    x, y, _, _ = toy
    cfg = _cfg(m=4, epochs=6, estimator="probability", converge_acc=None)
    dense = _estimate(x, y, range(4), cfg.model_copy(update={"first_layer": "dense"}))
    sparse = _estimate(x, y, range(4), cfg.model_copy(update={"first_layer": "sparse"}))
    np.testing.assert_allclose(dense.in_sum, sparse.in_sum, atol=1e-4)
    np.testing.assert_allclose(dense.out_sum, sparse.out_sum, atol=1e-4)


def test_convergence_stop_ends_models_early_and_none_trains_all_epochs(toy):
    x, y, _, _ = toy
    cfg = _cfg(m=4, epochs=40)
    stopped = _estimate(x, y, range(4), cfg)
    assert all(e < cfg.epochs for e in stopped.epochs_run) and all(e % cfg.converge_every == 0 for e in stopped.epochs_run)
    full = _estimate(x, y, range(4), cfg.model_copy(update={"epochs": 8, "converge_acc": None}))
    assert full.epochs_run == [8] * 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_stacked_ensemble(toy):
    x, y, typical, mislabeled = toy
    cfg = _cfg()
    assert resolve_device("auto").type == "cuda"
    stats = _estimate(x, y, range(cfg.m), cfg, device="auto")
    assert np.all(stats.in_count + stats.out_count == cfg.m)
    raw = scores_table(stats, y)["raw_score"].to_numpy()
    assert raw[mislabeled].min() > raw[typical].max()
    shards = [_estimate(x, y, ids, cfg, device="auto") for ids in (range(0, 5), range(5, 12))]
    assert np.array_equal(merge_shards(shards).in_count, stats.in_count)


def test_merge_refuses_overlap_and_size_mismatch():
    a = ShardStats(np.zeros(3), np.zeros(3, int), np.zeros(3), np.zeros(3, int), model_ids=[0, 1])
    b = ShardStats(np.zeros(3), np.zeros(3, int), np.zeros(3), np.zeros(3, int), model_ids=[1])
    c = ShardStats(np.zeros(4), np.zeros(4, int), np.zeros(4), np.zeros(4, int), model_ids=[2])
    with pytest.raises(ValueError, match="overlap"):
        merge_shards([a, b])
    with pytest.raises(ValueError, match="pool size"):
        merge_shards([a, c])
    with pytest.raises(ValueError, match="no memscore shards"):
        merge_shards([])


def test_baseline_loop_runs_all_epochs(toy):
    x, y, _, mislabeled = toy
    cfg = _cfg(m=3, epochs=2, batch_size=64)
    stats = baseline_loop(x, y, cfg, seed=RUN["seed"], device="cpu", progress=False, num_classes=N_CLASSES)
    assert stats.model_ids == [0, 1, 2] and stats.epochs_run == [2, 2, 2]
    assert np.all(stats.in_count + stats.out_count == 3)
    # same subsets as the estimator
    ours = _estimate(x, y, range(3), cfg.model_copy(update={"epochs": 1}))
    assert np.array_equal(ours.in_count, stats.in_count)


def test_image_models_fall_back_to_one_at_a_time_training():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(12, 3, 8, 8), dtype=np.uint8)
    y = np.arange(12) % 2
    cfg = MemScoreSettings(m=2, subset_fraction=0.5, epochs=1, batch_size=8)
    stats = estimate_shard(x, y, [0, 1], cfg, arch="resnet18", seed=0, device="cpu", progress=False, num_classes=2,
                           arch_kwargs={"mean": [0.5] * 3, "std": [0.25] * 3})
    assert stats.epochs_run == [1, 1]
    assert np.all(stats.in_count + stats.out_count == 2)
    assert np.all((stats.in_sum >= 0) & (stats.in_sum <= stats.in_count))


def test_pool_shards_train_on_the_train_pool_and_summarise(toy):
    x, y, _, _ = toy
    rows = np.arange(len(y))[::-1].copy()  # the pool in another order than the raw rows
    arrays = {"features": np.concatenate([x, x[:5]]), "labels": np.concatenate([y, y[:5]])}
    splits = {"train_pool": rows}
    info = {"kind": "tabular", "num_classes": N_CLASSES, "mean": None, "std": None}
    cfg = _cfg(m=6, epochs=4, n_shards=2)
    px, py = train_pool(arrays, splits)
    assert np.array_equal(px, x[rows]) and np.array_equal(py, y[rows])
    shards = [estimate_pool_shard(arrays, splits, info, cfg, k, 2, arch="column_fc", seed=3, device="cpu",
                                  progress=False) for k in range(2)]
    direct = _estimate(px, py, range(6), cfg)
    merged = merge_shards(shards)
    assert merged.model_ids == list(range(6))
    np.testing.assert_allclose(merged.in_sum, direct.in_sum, rtol=1e-6, atol=1e-9)
    table = scores_table(merged, py)
    summary = summarise_scores(table, "toy", cfg, tau=0.6)
    assert (summary["dataset"], summary["n"], summary["m"], summary["estimator"], summary["imported"]) == \
        ("toy", len(y), 6, "correctness", False)
    assert summary["tau"] == 0.6 and summary["share_at_or_above_tau"] == float(np.mean(table["score"] >= 0.6))


def test_memorization_package_does_not_import_kedro():
    for path in Path(memorization.__file__).parent.glob("*.py"):
        src = path.read_text()
        assert "import kedro" not in src and "from kedro" not in src, path


def test_missing_in_or_out_models_give_nan_raw_and_zero_score():
    stats = ShardStats(np.array([2.0, 1.0, 0.0]), np.array([2, 1, 0]), np.array([0.0, 1.0, 1.0]),
                       np.array([0, 1, 2]), model_ids=[0, 1])
    table = scores_table(stats, np.array([0, 1, 1]))
    assert np.isnan(table["raw_score"][0]) and np.isnan(table["raw_score"][2])
    assert table["score"][0] == 0 and table["score"][2] == 0 and table["raw_score"][1] == 0


# ------------------------------------------------------------------------------------------
# reference CSV import / export
# ------------------------------------------------------------------------------------------


def _table(n: int = 6) -> pd.DataFrame:
    stats = ShardStats(np.arange(n, dtype=float), np.full(n, n), np.zeros(n), np.full(n, n), model_ids=list(range(2 * n)))
    return scores_table(stats, np.arange(n) % 2)


def test_export_import_round_trip(tmp_path):
    table = _table()
    path = tmp_path / "scores.csv"
    export_reference_csv(table, path)
    assert path.read_text().splitlines()[0] == ",0"
    back = import_reference_csv(path, table["label"].to_numpy())
    assert list(back.columns) == list(table.columns) and back.shape == table.shape
    np.testing.assert_allclose(back["score"], table["score"])
    assert (back["n_in"] == -1).all() and (back["n_out"] == -1).all()


def test_import_reference_format_file(tmp_path):
    # the reference's layout: header ",0", rows "index,score", not necessarily in index order
    path = tmp_path / "ref.csv"
    path.write_text(",0\n2,0.5\n0,0.0\n1,1.0\n3,0.25\n")
    table = import_reference_csv(path, np.array([0, 1, 2, 0]))
    assert list(table.columns) == ["index", "label", "raw_score", "score", "n_in", "n_out"]
    assert table.shape == (4, 6)
    assert table["score"].tolist() == [0.0, 1.0, 0.5, 0.25]
    assert table["label"].tolist() == [0, 1, 2, 0]


@pytest.mark.parametrize(
    "content, match",
    [
        (",0\n0,0.1\n1,0.2\n5,0.3\n", "cover the train pool"),
        (",0\n0,0.1\n1,0.2\n", "cover the train pool"),
        (",0\n0,0.1\n1,1.2\n2,0.3\n", r"in \[0, 1\]"),
        (",0\n0,-0.1\n1,0.2\n2,0.3\n", r"in \[0, 1\]"),
        (",0\n0,abc\n1,0.2\n2,0.3\n", r"in \[0, 1\]"),
        (",0,1\n0,0.1,0.2\n1,0.2,0.3\n2,0.3,0.4\n", "one score column"),
    ],
)
def test_import_rejects_bad_files_naming_the_path(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        import_reference_csv(path, np.zeros(3, dtype=int))
    assert str(path) in str(info.value)


def test_import_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError) as info:
        import_reference_csv(path, np.zeros(3, dtype=int))
    assert str(path) in str(info.value)


def test_summary_and_plot_say_what_tau_flags():
    # known answer: scores 0.0, 0.1, …, 0.9. τ = 0.6 as a value flags 0.6, 0.7, 0.8, 0.9 (40%);
    # τ = 0.2 as a fraction flags the top 2 (0.8, 0.9), i.e. a threshold of 0.8
    import pandas as pd

    from wemem.ml.reporting import plot_score_distribution

    table = pd.DataFrame({"score": np.arange(10) / 10, "raw_score": np.arange(10) / 10,
                          "label": [0] * 5 + [1] * 5, "n_in": 3, "n_out": 3})
    cfg = _cfg(m=6)
    by_value = summarise_scores(table, "toy", cfg, tau=0.6)
    assert (by_value["flagged_share"], by_value["n_flagged"], by_value["threshold"]) == (0.4, 4, 0.6)
    by_share = summarise_scores(table, "toy", cfg, tau=0.2, tau_mode="fraction")
    assert (by_share["flagged_share"], by_share["n_flagged"], by_share["threshold"]) == (0.2, 2, 0.8)
    fig = plot_score_distribution(table, tau=0.2, tau_mode="fraction")
    hist, box = fig.axes
    assert [line.get_xdata()[0] for line in hist.lines] == [0.8]  # the threshold, not τ itself
    assert "flags 20.0% (2 of 10)" in " ".join(t.get_text() for t in hist.texts)
    # per class: class 0 (0.0–0.4) has none flagged, class 1 (0.5–0.9) has 2 of 5
    assert [t.get_text() for t in box.get_xticklabels()] == ["0\n0%", "1\n40%"]


def test_exact_in_out_case_from_fixed_per_model_correctness(monkeypatch):
    # Four models with hand-set memberships and correctness on a 3-sample pool (split into two
    # shards that are merged), worked out by hand:
    #   sample 0: in m0,m1 → 1,1 (mean 1);   out m2,m3 → 0,1 (0.5);  raw  0.5
    #   sample 1: in m0,m2 → 1,0 (0.5);      out m1,m3 → 0,1 (0.5);  raw  0
    #   sample 2: in m1,m2,m3 → 0,1,0 (1/3); out m0    → 1   (1);    raw −2/3
    # min–max normalised: (raw + 2/3) / (7/6) → 1, 4/7, 0.
    # catches: in/out sums swapped, counts off by one, a shard's models counted twice, or the
    # normalisation taken over the wrong axis
    import wemem.ml.memorization.estimator as est

    member = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [0, 0, 1]], dtype=bool)
    correct = np.array([[1, 1, 1], [1, 0, 0], [0, 0, 1], [1, 1, 0]], dtype=np.float64)

    def fixed(x, y, model_id, settings, **kw):
        return member[model_id], {"correctness": correct[model_id], "probability": correct[model_id] / 2}, 1

    monkeypatch.setattr(est, "train_single", fixed)
    x, y = np.zeros((3, 4), dtype=np.float32), np.array([0, 1, 0])
    cfg = _cfg(m=4, estimator="correctness")
    run = dict(arch="column_fc", seed=3, device="cpu", progress=False, arch_kwargs={"hidden": (4,), "dropout": 0.0,
                                                                                     "force_single": True})
    # arch_kwargs outside ColumnFC's {hidden, dropout} take the one-model-at-a-time path
    shards = [est.estimate_shard(x, y, ids, cfg, **run) for ids in ([0, 3], [1, 2])]
    table = est.scores_table(est.merge_shards(shards), y)
    np.testing.assert_allclose(table["raw_score"], [0.5, 0.0, -2 / 3])
    np.testing.assert_allclose(table["score"], [1.0, 4 / 7, 0.0])
    assert table["n_in"].tolist() == [2, 2, 3] and table["n_out"].tolist() == [2, 2, 1]
    assert table["index"].tolist() == [0, 1, 2] and table["label"].tolist() == [0, 1, 0]


def test_summary_fields_by_hand():
    """Every field of the memorisation summary by hand (issue 17: the mutation run found its keys
    and counts unchecked)."""

    # scores 0, 0, 0.25, 0.5, 1 (two exactly 0, one exactly 1); raw scores −0.5 … 1.5
    table = pd.DataFrame({"score": [0.0, 0.0, 0.25, 0.5, 1.0], "raw_score": [-0.5, 0.0, 0.5, 1.0, 1.5],
                          "label": [0, 1, 0, 1, 0], "n_in": [3, 2, 4, 5, 3], "n_out": [6, 7, 1, 4, 2]})
    got = summarise_scores(table, "toy", _cfg(m=8), tau=0.5)
    assert set(got) == {"dataset", "n", "m", "estimator", "imported", "raw", "score", "share_exactly_0",
                        "share_exactly_1", "tau", "share_at_or_above_tau", "tau_mode", "threshold",
                        "flagged_share", "n_flagged", "min_n_in", "min_n_out"}
    assert (got["dataset"], got["n"], got["m"], got["estimator"], got["imported"]) == (
        "toy", 5, 8, _cfg(m=8).estimator, False)
    assert got["score"]["mean"] == pytest.approx(0.35) and got["score"]["50%"] == 0.25
    assert got["raw"]["min"] == -0.5 and got["raw"]["max"] == 1.5 and got["raw"]["count"] == 5
    assert (got["share_exactly_0"], got["share_exactly_1"]) == (0.4, 0.2)
    assert (got["tau"], got["share_at_or_above_tau"], got["tau_mode"], got["threshold"]) == (0.5, 0.4, "value", 0.5)
    assert (got["flagged_share"], got["n_flagged"], got["min_n_in"], got["min_n_out"]) == (0.4, 2, 2, 1)
    top = summarise_scores(table, "toy", _cfg(m=8), tau=0.6, tau_mode="fraction")  # round(0.6·5) = 3 highest
    assert (top["tau_mode"], top["n_flagged"], top["flagged_share"], top["threshold"]) == ("fraction", 3, 0.6, 0.25)
    assert top["share_at_or_above_tau"] == 0.2  # scores ≥ 0.6 itself: only the 1.0
    one = summarise_scores(table.iloc[:1], "toy", _cfg(m=8), tau=0.5)  # a single score 0: nobody flagged
    assert (one["n"], one["n_flagged"], one["flagged_share"], one["threshold"]) == (1, 0, 0.0, 0.5)
    nobody = summarise_scores(table, "toy", _cfg(m=8), tau=0.05, tau_mode="fraction")  # round(0.25) = 0
    assert (nobody["n_flagged"], nobody["flagged_share"]) == (0, 0.0) and np.isinf(nobody["threshold"])
