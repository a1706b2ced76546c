"""Known answers for the memorisation estimator's machinery (issue 17's mutation run found these
unchecked): the stacked ensemble against models trained one at a time by an independent
reference (hand-written forward pass and Adam), the sparse pool rows against the dense ones,
the chunk size's arithmetic, the first-layer choice, and the glue (what each function hands on,
its log lines, its dtypes) checked against values worked out by hand.

The reference trains model ``j`` alone from ``(seed, j)``: its subset ``floor(r·n)`` samples
drawn by ``numpy.random.default_rng([seed, j])``, its seed the first word of
``SeedSequence([seed, j])``, nn.Linear's default initialisation from that seed, batch orders and
dropout masks from a generator with that seed, the mean cross-entropy of each batch, and Adam
(Kingma & Ba, L2 weight decay added to the gradient, as torch's Adam) written out by hand.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import wemem.ml.memorization.ensemble as ens
import wemem.ml.memorization.estimator as est
import wemem.ml.memorization.pool as pool
from wemem.ml.dropout import int16_uniforms, keep_threshold
from wemem.ml.memorization import MemScoreSettings, ShardStats, merge_shards, scores_table, shard_model_ids, summarise_scores
from wemem.ml.memorization.ensemble import StackedMLP, chunk_size, dropout_masks, pool_csr, train_chunk
from wemem.ml.memorization.sparse import PoolCSR
from wemem.ml.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # only its .type is read: no GPU needed
LOGGER = "wemem.ml.memorization"


# ------------------------------------------------------------------------------------------
# the independent reference: one model at a time
# ------------------------------------------------------------------------------------------


class _HandAdam:
    """Adam as in Kingma & Ba, with ``weight_decay · p`` added to the gradient (torch's L2 form)."""

    def __init__(self, params, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.wd, self.betas, self.eps = params, lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad + self.wd * p
            m.mul_(b1).add_((1 - b1) * g)
            v.mul_(b2).add_((1 - b2) * g * g)
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            p -= self.lr * m_hat / (v_hat.sqrt() + self.eps)
            p.grad = None


def _ref_seed(seed: int, j: int) -> int:
    return int(np.random.SeedSequence([seed, j]).generate_state(1)[0])


def _ref_member(n: int, fraction: float, seed: int, j: int) -> np.ndarray:
    member = np.zeros(n, dtype=bool)
    member[np.random.default_rng([seed, j]).choice(n, size=int(math.floor(fraction * n)), replace=False)] = True
    return member


def _ref_forward(params, xb, masks):
    w1, b1, w2, b2, w3, b3 = params
    h = torch.relu(xb @ w1 + b1)
    if masks is not None:
        h = h * masks[0]
    h = torch.relu(h @ w2 + b2)
    if masks is not None:
        h = h * masks[1]
    return h @ w3 + b3


def _ref_model(x, y, j, cfg, *, seed, hidden, dropout, num_classes):
    """Model ``j`` trained alone. Returns (member, final (correct, ptrue), epochs run,
    {epoch: (correct, ptrue)} after every epoch)."""
    n, d = x.shape
    s = _ref_seed(seed, j)
    member = _ref_member(n, cfg.subset_fraction, seed, j)
    sub = torch.as_tensor(np.flatnonzero(member))
    k = sub.numel()
    g = torch.Generator().manual_seed(s)
    params = []
    sizes = [d, *hidden, num_classes]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):  # nn.Linear's default: U(±1/sqrt(fan_in))
        bound = 1 / math.sqrt(fan_in)
        params.append(((torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound).requires_grad_())
        params.append(((torch.rand(fan_out, generator=g) * 2 - 1) * bound).requires_grad_())
    opt = _HandAdam(params, cfg.lr, cfg.weight_decay)
    gen = torch.Generator().manual_seed(s)

    @torch.no_grad()
    def signals():
        logits = _ref_forward(params, x, None)
        return (logits.argmax(1) == y).numpy(), torch.softmax(logits, 1)[torch.arange(n), y].numpy()

    history = {}
    for epoch in range(1, cfg.epochs + 1):
        order = sub[torch.randperm(k, generator=gen)]
        for b in range(0, k, cfg.batch_size):
            idx = order[b : b + cfg.batch_size]
            masks = None
            if dropout:
                masks = [m[0] for m in dropout_masks([gen], idx.numel(), hidden, dropout, CPU)]
            F.cross_entropy(_ref_forward(params, x[idx], masks), y[idx]).backward()
            opt.step()
        history[epoch] = signals()
        if cfg.converge_acc is not None and epoch != cfg.epochs and epoch % cfg.converge_every == 0:
            rows = sub[: cfg.converge_check_rows]
            with torch.no_grad():
                acc = float((_ref_forward(params, x[rows], None).argmax(1) == y[rows]).float().mean())
            if acc >= cfg.converge_acc:
                return member, history[epoch], epoch, history
    return member, history[cfg.epochs], cfg.epochs, history


def _data(n=30, d=8, num_classes=3, seed=0):
    """Non-binary features, about half zeros, labels from a random linear rule (learnable)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32) * (rng.random((n, d)) < 0.5)
    y = (x @ rng.normal(size=(d, num_classes))).argmax(1)
    return x, y


def _cfg(**kw) -> MemScoreSettings:
    base = dict(m=4, subset_fraction=0.6, epochs=7, batch_size=8, lr=0.05, weight_decay=0.05,
                converge_acc=None, converge_every=3, converge_check_rows=4, first_layer="dense")
    base.update(kw)
    return MemScoreSettings(**base)


# ------------------------------------------------------------------------------------------
# the stacked ensemble against the reference
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first_layer", ["dense", "sparse"])
def test_estimate_all_equals_models_trained_one_at_a_time(first_layer, caplog):
    # dropout 0.25 and weight decay 0.05 on: a mask not applied, a loss scaled by the batch size
    # (Adam ignores a common scale, weight decay does not), a skipped row or a wrong initial
    # weight each moves every model off the reference
    x, y = _data()
    cfg = _cfg(first_layer=first_layer)
    hidden, dropout, seed = (8, 6), 0.25, 11
    caplog.set_level(logging.INFO, logger=LOGGER)
    got = est.estimate_all(x, y, [1, 2, 5], cfg, arch="column_fc", seed=seed, device="cpu", progress=False,
                           arch_kwargs={"hidden": hidden, "dropout": dropout})
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    in_sum = {e: np.zeros(len(y)) for e in ("correctness", "probability")}
    out_sum = {e: np.zeros(len(y)) for e in ("correctness", "probability")}
    n_in = np.zeros(len(y), dtype=np.int64)
    for j in (1, 2, 5):
        member, (correct, ptrue), epochs, _ = _ref_model(xt, yt, j, cfg, seed=seed, hidden=hidden, dropout=dropout,
                                                         num_classes=3)
        assert epochs == cfg.epochs
        n_in += member
        for e, v in (("correctness", correct.astype(float)), ("probability", ptrue.astype(float))):
            in_sum[e] += np.where(member, v, 0)
            out_sum[e] += np.where(member, 0, v)
    for e in ("correctness", "probability"):
        s = got[e]
        assert s.model_ids == [1, 2, 5] and s.epochs_run == [cfg.epochs] * 3
        assert s.in_count.dtype == np.int64 and s.out_count.dtype == np.int64
        assert np.array_equal(s.in_count, n_in) and np.array_equal(s.out_count, 3 - n_in)
        np.testing.assert_allclose(s.in_sum, in_sum[e], atol=1e-4)
        np.testing.assert_allclose(s.out_sum, out_sum[e], atol=1e-4)
    assert in_sum["probability"].sum() > 0 and np.ptp(in_sum["probability"]) > 0.1  # a real signal
    kind = "sparse" if first_layer == "sparse" else "dense"
    assert f"memscore: 3 models, stacked MLP ensemble in chunks of 16 on cpu, {kind} first layer" in caplog.messages


def _train_chunk_case(cfg, *, dropout, seed=5, ids=(0, 1, 2, 3)):
    x, y = _data(n=24, d=6, seed=seed)
    return torch.as_tensor(x), torch.as_tensor(y), list(ids), cfg, dropout


def test_train_chunk_equals_reference_with_convergence_stop_and_checks():
    # converge_acc = 1.0 (reachable, and only with ≥), checked every 3 epochs of 7 on 4 rows of
    # each model's subset: models stop at different epochs, the stack drops them and keeps the
    # others' Adam state; every on_check call gets the active models' eval-mode signals
    cfg = _cfg(converge_acc=1.0, epochs=7, lr=0.03)
    xt, yt, ids, cfg, dropout = _train_chunk_case(cfg, dropout=0.0)
    calls = []
    members, signals, epochs = train_chunk(xt, yt, ids, cfg, seed=7, num_classes=3, csr=None, hidden=(8, 6),
                                           dropout=dropout, progress=False,
                                           on_check=lambda e, m, c, p: calls.append((e, m, c.clone(), p.clone())))
    ref = {j: _ref_model(xt, yt, j, cfg, seed=7, hidden=(8, 6), dropout=0.0, num_classes=3) for j in ids}
    assert epochs == [ref[j][2] for j in ids]
    assert len(set(epochs)) >= 2 and min(epochs) < cfg.epochs, epochs  # the case stops models at different epochs
    for pos, j in enumerate(ids):
        assert np.array_equal(members[pos], ref[j][0])
        assert np.array_equal(signals["correctness"][pos], ref[j][1][0].astype(float))
        np.testing.assert_allclose(signals["probability"][pos], ref[j][1][1], atol=1e-5)
    # the checks: epochs 3 and 6 (never the last epoch), each with the models still training, then
    # the last epoch for those that never stopped
    expected = []
    active = list(ids)
    for e in (3, 6):
        if active:
            expected.append((e, list(active)))
        active = [j for j in active if ref[j][2] != e]
    if active:
        expected.append((cfg.epochs, active))
    assert [(e, m) for e, m, _, _ in calls] == expected
    for e, m, c, p in calls:
        for row, j in enumerate(m):
            assert np.array_equal(c[row].numpy(), ref[j][3][e][0])
            np.testing.assert_allclose(p[row].numpy(), ref[j][3][e][1], atol=1e-5)


def test_train_chunk_without_stop_checks_every_converge_every_epochs():
    # converge_acc None: on_check still runs at epochs 3 and 6 and once at the end (epoch 7)
    cfg = _cfg(epochs=7)
    xt, yt, ids, cfg, _ = _train_chunk_case(cfg, dropout=0.0, ids=(2, 3))
    calls = []
    _, signals, epochs = train_chunk(xt, yt, ids, cfg, seed=1, num_classes=3, csr=None, hidden=(5, 4), dropout=0.0,
                                     progress=False, on_check=lambda e, m, c, p: calls.append((e, m)))
    assert calls == [(3, [2, 3]), (6, [2, 3]), (7, [2, 3])] and epochs == [7, 7]
    for pos, j in enumerate(ids):
        _, (correct, ptrue), _, _ = _ref_model(xt, yt, j, cfg, seed=1, hidden=(5, 4), dropout=0.0, num_classes=3)
        np.testing.assert_allclose(signals["probability"][pos], ptrue, atol=1e-5)


def test_train_chunk_with_a_csr_reads_every_product_from_it():
    # the dense x handed beside a CSR is zeros: if training, the convergence check or the pool
    # signals fell back to the dense path, the results would be those of an all-zero pool
    cfg = _cfg(converge_acc=1.0, epochs=7, lr=0.03)
    xt, yt, ids, cfg, _ = _train_chunk_case(cfg, dropout=0.0)
    members, signals, epochs = train_chunk(torch.zeros_like(xt), yt, ids, cfg, seed=7, num_classes=3,
                                           csr=PoolCSR(xt), hidden=(8, 6), dropout=0.0, progress=False)
    for pos, j in enumerate(ids):
        member, (correct, ptrue), e, _ = _ref_model(xt, yt, j, cfg, seed=7, hidden=(8, 6), dropout=0.0,
                                                    num_classes=3)
        assert epochs[pos] == e
        np.testing.assert_allclose(signals["probability"][pos], ptrue, atol=1e-5)


def test_train_chunk_progress_bar(monkeypatch):
    bars = []

    class Bar:
        def __init__(self, it, **kw):
            self.it, self.kw, self.postfix = it, kw, []
            bars.append(self)

        def __iter__(self):
            return iter(self.it)

        def set_postfix(self, **kw):
            self.postfix.append(kw)

        def close(self):
            self.closed = True

    monkeypatch.setattr(ens, "tqdm", Bar)
    xt, yt, _, cfg, _ = _train_chunk_case(_cfg(epochs=4, converge_every=2, converge_acc=0.0), dropout=0.0)
    train_chunk(xt, yt, [3, 4, 6], cfg, seed=1, num_classes=3, csr=None, hidden=(4, 3), dropout=0.0)
    train_chunk(xt, yt, [3, 4, 6], cfg, seed=1, num_classes=3, csr=None, hidden=(4, 3), dropout=0.0, progress=False)
    assert list(bars[0].it) == [0, 1, 2, 3]
    assert bars[0].kw == {"desc": "memscore models 3-6", "disable": None, "leave": False, "dynamic_ncols": True}
    assert bars[1].kw["disable"] is True
    assert bars[0].postfix == [{"active": 0}] and bars[0].closed  # all three stop at the epoch-2 check


def test_train_chunk_non_finite_loss_names_models_and_epoch():
    xt, yt, _, cfg, _ = _train_chunk_case(_cfg(epochs=3), dropout=0.0)
    xt[:, 0] = float("inf")
    with pytest.raises(FloatingPointError,
                       match=r"^memscore models \[0, 1\]: the training loss became nan in epoch 0; lower the learning rate$"):
        train_chunk(xt, yt, [0, 1], cfg, seed=1, num_classes=3, csr=None, hidden=(4, 3), dropout=0.0, progress=False)


def test_stacked_adam_is_fused_with_the_settings_and_falls_back_to_foreach(monkeypatch):
    params = StackedMLP.init([1, 2], 3, (4,), 2, CPU)
    net = StackedMLP(params, lr=0.123, weight_decay=0.045)
    d = net.opt.defaults
    assert (d["lr"], d["weight_decay"], d["fused"]) == (0.123, 0.045, True)
    assert [p for g in net.opt.param_groups for p in g["params"]] == net.params
    real = torch.optim.Adam

    def no_fused(params, **kw):
        if "fused" in kw:
            raise RuntimeError("no fused Adam in this build")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    net = StackedMLP(params, lr=0.5, weight_decay=0.25)
    d = net.opt.defaults
    assert (d["lr"], d["weight_decay"], d["foreach"], d["fused"]) == (0.5, 0.25, True, None)
    assert [p for g in net.opt.param_groups for p in g["params"]] == net.params


def test_init_is_nn_linear_default_from_each_models_seed():
    w1, b1 = StackedMLP.init([5, 9], 4, (), 3, CPU)
    for row, s in enumerate((5, 9)):
        g = torch.Generator().manual_seed(s)
        assert torch.equal(w1[row], (torch.rand(4, 3, generator=g) * 2 - 1) / 2)  # 1/sqrt(4)
        assert torch.equal(b1[row], (torch.rand(3, generator=g) * 2 - 1) / 2)


def test_dropout_masks_are_the_int16_draws_at_the_threshold():
    # 2·512·384 draws: a few equal the threshold exactly, and those are kept (≥)
    p = 0.1
    masks = dropout_masks([torch.Generator().manual_seed(s) for s in (1, 2)], 512, (256, 128), p, CPU)
    for row, s in enumerate((1, 2)):
        u = int16_uniforms(512 * 384, CPU, torch.Generator().manual_seed(s)).view(512, 384)
        want = (u >= keep_threshold(p)).float() / (1 - p)
        assert torch.equal(torch.cat([masks[0][row], masks[1][row]], 1), want)
        assert int((u == keep_threshold(p)).sum()) > 0


# ------------------------------------------------------------------------------------------
# the sparse pool rows
# ------------------------------------------------------------------------------------------


def _dense_of(idx, offsets, val, n_rows, n_cols):
    out = torch.zeros(n_rows, n_cols)
    ends = list(offsets[1:].tolist()) + [idx.numel()]
    for r, (a, b) in enumerate(zip(offsets.tolist(), ends)):
        for t in range(a, b):
            out[r, int(idx[t])] += 1.0 if val is None else float(val[t])
    return out


@pytest.mark.parametrize("value", [1.0, 2.0, 2.5, "mixed"])
def test_pool_csr_batches_are_the_dense_rows(value):
    rng = np.random.default_rng(4)
    nz = rng.random((9, 5)) < 0.4
    x = torch.as_tensor(nz * (rng.integers(1, 4, size=(9, 5)) if value == "mixed" else value), dtype=torch.float32)
    csr = PoolCSR(x)
    assert (csr.val is None) == (value == 1.0)  # binary pools take embedding_bag's unweighted path
    rows = torch.as_tensor([[8, 0, 3], [3, 3, 6]])
    block = torch.zeros(6, 10)  # block-diagonal: model j's rows address columns j·d …
    for j in range(2):
        block[3 * j : 3 * j + 3, 5 * j : 5 * j + 5] = x[rows[j]]
    for transpose in (True, False):
        sb = csr.batch(rows, transpose=transpose)
        assert torch.equal(_dense_of(sb.idx, sb.offsets, sb.val, 6, 10), block)
    sb = csr.batch(rows)
    assert torch.equal(_dense_of(sb.t_idx, sb.t_offsets, sb.t_val, 10, 6), block.T)
    # inside each (model, feature) group the rows ascend (sums in a fixed order)
    ends = list(sb.t_offsets[1:].tolist()) + [sb.t_idx.numel()]
    for a, b in zip(sb.t_offsets.tolist(), ends):
        assert sb.t_idx[a:b].tolist() == sorted(sb.t_idx[a:b].tolist())
    for start, stop in ((0, 9), (2, 7), (5, 6)):
        idx, offs, val = csr.model_rows(start, stop)
        assert torch.equal(_dense_of(idx, offs, val, stop - start, 5), x[start:stop])


def test_pool_csr_choice(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    quarter = torch.zeros(8, 4)
    quarter[torch.arange(8), torch.arange(8) % 4] = 1  # density exactly 0.25
    eighth = torch.zeros(8, 8)
    eighth[torch.arange(8), torch.arange(8)] = 1  # density 0.125
    assert pool_csr(eighth, _cfg(first_layer="dense"), CPU) is None
    assert isinstance(pool_csr(quarter, _cfg(first_layer="sparse"), CPU), PoolCSR)
    assert isinstance(pool_csr(eighth, _cfg(first_layer="sparse"), CUDA), PoolCSR)
    assert pool_csr(quarter, _cfg(first_layer="auto"), CPU) is None  # at the threshold: dense
    assert pool_csr(eighth, _cfg(first_layer="auto"), CUDA) is None
    caplog.clear()
    assert isinstance(pool_csr(eighth, _cfg(first_layer="auto"), CPU), PoolCSR)
    assert caplog.messages == ["memscore: input density 0.125, sparse first layer"]


@pytest.mark.parametrize(
    "device, in_features, n_models, hidden, per_chunk, want",
    [
        (CPU, 1000, 300, (256, 128), None, 16),
        (CPU, 10, 3, (4,), 5, 5),
        (CUDA, 10, 3, (4,), 7, 7),
        # weights of the hidden layers: 1000·256 + 256·128 = 288768 floats, ×4 (weights, grad,
        # two Adam moments): 2^28 // 1155072 = 232
        (CUDA, 1000, 300, (256, 128), None, 232),
        (CUDA, 1000, 100, (256, 128), None, 100),
        (CUDA, 10, 300, (4, 2), None, 256),
        (CUDA, 10**6, 300, (256, 128), None, 1),  # 2^28 // (4·256032768) = 0 → at least 1
        (CUDA, 100, 300, (2000,), None, 335),  # 2^28 // 800000 = 335 → capped at 256 below
    ],
)
def test_chunk_size_arithmetic(device, in_features, n_models, hidden, per_chunk, want):
    got = chunk_size(_cfg(models_per_chunk=per_chunk), device, in_features, n_models, hidden)
    assert got == min(want, 256) and isinstance(got, int)


# ------------------------------------------------------------------------------------------
# the estimator's glue
# ------------------------------------------------------------------------------------------


def test_estimate_all_hands_on_its_arguments(monkeypatch):
    seen = {}

    def spy_size(settings, device, in_features, n_models, hidden):
        seen["size"] = (settings, device.type, in_features, n_models, hidden)
        return 2

    def spy_chunk(x, y, model_ids, settings, **kw):
        seen.setdefault("chunks", []).append((x.shape, model_ids, kw))
        n = x.shape[0]
        members = np.array([[m % 2 == i % 2 for i in range(n)] for m in model_ids])
        return members, {"correctness": members * 1.0, "probability": members * 0.5}, [3] * len(model_ids)

    monkeypatch.setattr(est, "chunk_size", spy_size)
    monkeypatch.setattr(est, "train_chunk", spy_chunk)
    x = np.zeros((5, 2, 3), dtype=np.float32)
    x[0, 0, 0] = 1  # sparse enough for a CSR
    y = np.array([0, 1, 0, 1, 1])  # max label 1, but 4 classes asked for
    cfg = _cfg(first_layer="auto")
    t0 = time.perf_counter()
    stats = est.estimate_shard(x, y, [4, 5, 7], cfg, arch="column_fc", seed=2, num_classes=4)
    wall = time.perf_counter() - t0
    assert seen["size"] == (cfg, "cpu", 6, 3, (256, 128))
    assert [c[1] for c in seen["chunks"]] == [[4, 5], [7]]
    kw = seen["chunks"][0][2]
    assert seen["chunks"][0][0] == (5, 6)
    assert isinstance(kw.pop("csr"), PoolCSR)
    assert kw == {"seed": 2, "num_classes": 4, "progress": True}
    assert stats.model_ids == [4, 5, 7] and stats.epochs_run == [3, 3, 3] and 0 <= stats.seconds <= wall
    # members alternate by model parity: sample i is in models with the same parity
    assert stats.in_count.tolist() == [1, 2, 1, 2, 1] and stats.out_count.tolist() == [2, 1, 2, 1, 2]
    np.testing.assert_allclose(stats.in_sum, [1, 2, 1, 2, 1])  # correctness (the default estimator) = 1 when in
    # hidden and dropout go to the stack; the default num_classes is max label + 1
    seen.clear()
    est.estimate_all(x, y, [0], cfg.model_copy(update={"first_layer": "dense"}), arch="column_fc", seed=2,
                     progress=False, arch_kwargs={"hidden": (3,), "dropout": 0.0})
    assert seen["size"][4] == (3,)
    kw = seen["chunks"][0][2]
    assert kw == {"seed": 2, "num_classes": 2, "csr": None, "progress": False, "hidden": (3,), "dropout": 0.0}


def test_estimate_all_default_class_count_trains_the_same_models():
    x, y = _data(n=20, d=5)
    cfg = _cfg(epochs=2)
    run = dict(arch="column_fc", seed=1, device="cpu", progress=False, arch_kwargs={"hidden": (4, 3)})
    a = est.estimate_all(x, y, [0, 1], cfg, **run)
    b = est.estimate_all(x, y, [0, 1], cfg, num_classes=3, **run)
    assert int(y.max()) == 2
    np.testing.assert_array_equal(a["probability"].in_sum, b["probability"].in_sum)


def test_single_model_path_hands_on_its_arguments(monkeypatch):
    bars, fits, built = [], [], []

    def fake_tqdm(it, **kw):
        bars.append(kw)
        return it

    def spy_build(arch, shape, num_classes, **kw):
        built.append((arch, shape, num_classes, kw))
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(shape)), num_classes))

    def spy_fit(model, train, dev, cfg):
        fits.append((train, dev, cfg, torch.initial_seed()))
        return SimpleNamespace(epochs_run=2)

    monkeypatch.setattr(est, "tqdm", fake_tqdm)
    monkeypatch.setattr(est, "build_model", spy_build)
    monkeypatch.setattr(est, "fit", spy_fit)
    x = np.arange(40, dtype=np.float32).reshape(10, 4) / 40
    y = np.arange(10) % 2
    cfg = _cfg(m=2, epochs=5, batch_size=3, lr=0.02, weight_decay=0.001)
    stats = est.estimate_shard(x, y, [3, 8], cfg, arch="resnet18", seed=6, device="cpu", num_classes=3,
                             arch_kwargs={"mean": [0.5], "std": [0.2]})
    assert bars == [{"desc": "memscore models", "disable": None, "leave": False}]
    assert built == [("resnet18", (4,), 3, {"mean": [0.5], "std": [0.2]})] * 2
    for (train, dev, tcfg, torch_seed), j in zip(fits, (3, 8)):
        member = _ref_member(10, 0.6, 6, j)
        assert torch.equal(train[0], torch.as_tensor(x[member])) and torch.equal(train[1], torch.as_tensor(y[member]))
        assert dev is None and torch_seed == _ref_seed(6, j)
        assert tcfg == TrainConfig(epochs=5, batch_size=3, lr=0.02, weight_decay=0.001, patience=None,
                                   seed=_ref_seed(6, j), progress=False, desc=f"memscore model {j}")
    assert stats.epochs_run == [2, 2] and np.all(stats.in_count + stats.out_count == 2)
    est.estimate_all(x, y, [3], cfg, arch="resnet18", seed=6, device="cpu", progress=False, num_classes=3)
    assert bars[-1]["disable"] is True and built[-1][3] == {}


def test_single_model_signals_by_hand():
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    got = est._signals(probs, torch.tensor([1, 2, 2]))
    assert got["correctness"].tolist() == [1.0, 0.0, 1.0]
    np.testing.assert_allclose(got["probability"], [0.7, 0.2, 0.6])


def test_estimate_pool_shard_hands_on_its_arguments(monkeypatch, caplog):
    seen = []

    def spy(x, y, ids, settings, **kw):
        seen.append((x, y, ids, settings, kw))
        return ShardStats(np.zeros(3), np.zeros(3, int), np.zeros(3), np.zeros(3, int), model_ids=ids, seconds=1.5)

    monkeypatch.setattr(pool, "estimate_shard", spy)
    caplog.set_level(logging.INFO, logger=LOGGER)
    arrays = {"features": np.arange(10.0).reshape(5, 2), "labels": np.array([0, 1, 2, 0, 1])}
    splits = {"train_pool": np.array([4, 0, 2])}
    cfg = _cfg(m=7)
    image = {"kind": "image", "num_classes": 3, "mean": [0.1], "std": [0.3]}
    pool.estimate_pool_shard(arrays, splits, image, cfg, 1, 3, arch="resnet18", seed=np.int64(9))
    x, y, ids, settings, kw = seen[0]
    assert np.array_equal(x, arrays["features"][[4, 0, 2]]) and y.tolist() == [1, 0, 2]
    assert ids == [2, 3, 4] and settings is cfg  # 7 models in 3 shards: 0–1, 2–4, 5–6
    assert kw == {"arch": "resnet18", "seed": 9, "device": "auto", "progress": True, "num_classes": 3,
                  "arch_kwargs": {"mean": [0.1], "std": [0.3]}}
    assert type(kw["seed"]) is int
    assert caplog.messages[-1] == "memscore shard 2/3: models 2-4 in 1.5s"
    tab = {"kind": "tabular", "num_classes": 2, "mean": None, "std": None}
    pool.estimate_pool_shard(arrays, splits, tab, cfg, 2, 3, arch="column_fc", seed=1, device="cpu", progress=0)
    kw = seen[1][4]
    assert kw["arch_kwargs"] is None and kw["progress"] is False and kw["device"] == "cpu"
    assert caplog.messages[-1] == "memscore shard 3/3: models 5-6 in 1.5s"


def test_summarise_scores_log_line_and_import_flag(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    table = pd.DataFrame({"score": [0.0, 0.0, 0.25, 0.5, 1.0], "raw_score": [-0.5, 0.0, 0.5, 1.0, 1.5],
                          "label": [0, 1, 0, 1, 0], "n_in": [3, 2, 4, 5, 3], "n_out": [6, 7, 1, 4, 2]})
    got = summarise_scores(table, "toy", _cfg(m=8, import_csv="ref.csv"), tau=0.5)
    assert got["imported"] is True
    # median 0.25; τ = 0.5 flags 0.5 and 1.0 (40 %); 2 of 5 exactly 0 (40 %)
    assert caplog.messages == ["memscore toy: median 0.250; τ=0.5 (value) flags 40.0% (2 samples, score ≥ 0.500); "
                               "40.0% exactly 0"]


# ------------------------------------------------------------------------------------------
# the statistics and the score table
# ------------------------------------------------------------------------------------------


def test_shard_stats_dtypes_round_trip_and_merge_seconds():
    empty = est.empty_stats(3)
    assert [a.dtype for a in (empty.in_sum, empty.in_count, empty.out_sum, empty.out_count)] == \
        [np.float64, np.int64, np.float64, np.int64]
    d = ShardStats(np.zeros(2), np.zeros(2, int), np.zeros(2), np.zeros(2, int)).to_dict()
    assert d["model_ids"].dtype == np.int64 and d["epochs_run"].dtype == np.int64  # empty lists too
    back = ShardStats.from_dict({"in_sum": [1, 2], "in_count": [1.0, 2.0], "out_sum": [3, 4], "out_count": [0.0, 1.0],
                                 "model_ids": [[1, 2]], "epochs_run": [5, 6]})
    assert [a.dtype for a in (back.in_sum, back.in_count, back.out_sum, back.out_count)] == \
        [np.float64, np.int64, np.float64, np.int64]
    assert back.seconds == 0.0 and back.model_ids == [1, 2]
    a = ShardStats(np.zeros(2), np.zeros(2, int), np.zeros(2), np.zeros(2, int), model_ids=[0], seconds=1.25)
    b = ShardStats(np.zeros(2), np.zeros(2, int), np.zeros(2), np.zeros(2, int), model_ids=[1], seconds=2.5)
    assert merge_shards([a, b]).seconds == 3.75


def test_merge_and_shard_errors_say_exactly_what():
    a = ShardStats(np.zeros(3), np.zeros(3, int), np.zeros(3), np.zeros(3, int), model_ids=[0, 1])
    with pytest.raises(ValueError, match=r"^no memscore shards to merge$"):
        merge_shards([])
    with pytest.raises(ValueError, match=r"^memscore shards overlap: a model id appears in two shards$"):
        merge_shards([a, a])
    with pytest.raises(ValueError, match=r"^shard 3 is outside 0\.\.2$"):
        shard_model_ids(10, 3, 3)


def test_scores_table_by_hand(caplog):
    # sample 0: in 3/4, out 1/2 → 0.25;  sample 1: in 1/1, out 0/1 → 1;  sample 2: no out-model;
    # sample 3: in 0/2, out 1/2 → −0.5;  sample 4: no in-model.  min–max over 0.25, 1, −0.5:
    # (raw + 0.5) / 1.5 → 0.5, 1, 0; the two without an estimate: NaN raw, score 0
    stats = ShardStats(np.array([3.0, 1.0, 2.0, 0.0, 0.0]), np.array([4, 1, 2, 2, 0]),
                       np.array([1.0, 0.0, 0.0, 1.0, 1.0]), np.array([2, 1, 0, 2, 2]), model_ids=[0, 1])
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 for the missing samples is expected, not warned about
        table = scores_table(stats, np.array([2, 0, 1, 1, 0], dtype=np.uint8))
    raw = table["raw_score"].to_numpy()
    np.testing.assert_allclose(raw[[0, 1, 3]], [0.25, 1.0, -0.5])
    assert np.isnan(raw[2]) and np.isnan(raw[4])
    np.testing.assert_allclose(table["score"], [0.5, 1.0, 0.0, 0.0, 0.0])
    assert {c: str(t) for c, t in table.dtypes.items()} == {"index": "int64", "label": "int64", "raw_score": "float64",
                                                             "score": "float64", "n_in": "int64", "n_out": "int64"}
    assert table["label"].tolist() == [2, 0, 1, 1, 0]
    assert caplog.messages == ["memscore: 2 samples lack in- or out-models (raise m); their score is set to 0"]


def test_scores_table_all_equal_scores_normalise_to_zero():
    stats = ShardStats(np.array([1.0, 2.0, 0.0]), np.array([2, 4, 1]), np.array([0.0, 0.0, 0.0]), np.array([1, 1, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = scores_table(stats, np.zeros(3, dtype=int))
    np.testing.assert_allclose(table["raw_score"], [0.5, 0.5, 0.0])
    stats.in_sum[2] = 0.5  # now every raw score is 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = scores_table(stats, np.zeros(3, dtype=int))
    assert table["score"].tolist() == [0.0, 0.0, 0.0]


def test_no_check_at_the_last_epoch_even_when_it_is_a_multiple_of_converge_every():
    # 6 epochs, checks every 3: epoch 3 in the loop, epoch 6 only once, after the loop
    xt, yt, _, cfg, _ = _train_chunk_case(_cfg(epochs=6, converge_every=3), dropout=0.0)
    calls = []
    train_chunk(xt, yt, [0, 1], cfg, seed=1, num_classes=3, csr=None, hidden=(4, 3), dropout=0.0, progress=False,
                on_check=lambda e, m, c, p: calls.append((e, m)))
    assert calls == [(3, [0, 1]), (6, [0, 1])]
