"""The attack package's glue against independent answers: signals in float64 on float32 or
extreme inputs, results and pooled shadows with their dtypes, every AttackData refusal word
for word, run_attacks' contexts and progress bar, and choose_attack's arguments and choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wemem.ml.attacks import base as attack_base
from wemem.ml.attacks import runner, selection
from wemem.ml.attacks.base import AttackData, AttackResult, ModelOutputs, make_result, pooled_shadows, validate_attack_data
from wemem.ml.attacks.signals import entropy, logit_confidence, modified_entropy, softmax, true_class_log_prob, true_class_prob
from wemem.ml.registry import Registry


# ------------------------------------------------------------------ signals
def _logsumexp(values):
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def test_softmax_is_float64_per_row_over_the_last_axis_even_for_extreme_logits():
    z = np.array([[1000.0, 0.0, -5.0], [-1000.0, -1001.0, -1002.0]], dtype=np.float32)
    p = softmax(z)
    assert p.dtype == np.float64
    for row, zrow in zip(p, z.astype(np.float64)):
        want = [math.exp(v - _logsumexp(list(zrow))) for v in zrow]
        np.testing.assert_allclose(row, want, rtol=1e-12, atol=0)
    # leading model axes: (k, n, C), normalised over C only
    z3 = np.random.default_rng(0).normal(size=(2, 4, 3)) * 5
    p3 = softmax(z3)
    np.testing.assert_allclose(p3.sum(axis=-1), np.ones((2, 4)), rtol=1e-12)
    np.testing.assert_allclose(p3[1], softmax(z3[1]), rtol=1e-12)
    # float32 input, float64 result: equal to the float64 computation, not a float32 one
    z32 = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
    assert softmax(z32)[0, 0] == pytest.approx(math.exp(float(z32[0, 0]) - _logsumexp([float(v) for v in z32[0]])), rel=1e-14)


def test_logit_confidence_and_log_prob_by_logsumexp_by_hand_for_extreme_rows_and_float_labels():
    z = np.array([[1000.0, 0.0, -5.0], [-1000.0, -1001.0, -1002.0], [3.0, 1.0, 2.0]])
    labels = np.array([0.0, 2.0, 1.0])  # whole numbers stored as floats (e.g. read from a table)
    conf = logit_confidence(z, labels)
    logp = true_class_log_prob(z, labels)
    for i, y in enumerate([0, 2, 1]):
        rest = [z[i, c] for c in range(3) if c != y]
        assert conf[i] == pytest.approx(z[i, y] - _logsumexp(rest), rel=1e-12, abs=1e-12)
        assert logp[i] == pytest.approx(z[i, y] - _logsumexp(list(z[i])), rel=1e-12, abs=1e-12)
    assert conf.dtype == np.float64 and np.isfinite(conf).all()
    # a single class: nothing else to compare with, the confidence is +inf (not NaN)
    one = logit_confidence(np.array([[2.0], [-1.0]]), np.array([0, 0]))
    assert one.tolist() == [math.inf, math.inf]
    # leading model axes broadcast against (n,) labels
    z3 = np.stack([z, z - 1.0])
    np.testing.assert_allclose(logit_confidence(z3, labels)[1], conf, rtol=1e-12)


def test_entropies_treat_zero_and_one_as_limits_and_compute_in_float64():
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 1.0, 0.0]], dtype=np.float32)
    labels = np.array([0.0, 2.0, 1.0, 0.0])  # float whole numbers are taken as class indices
    h = entropy(p)
    m = modified_entropy(p, labels)
    assert h.dtype == np.float64 and m.dtype == np.float64
    eps = 1e-7
    p64 = p.astype(np.float64)

    def xlogx(v):
        return v * math.log(max(v, eps))

    for i, y in enumerate([0, 2, 1, 0]):
        assert h[i] == pytest.approx(-sum(xlogx(v) for v in p64[i]), rel=1e-12, abs=1e-15)
        want = -(1 - p64[i, y]) * math.log(max(p64[i, y], eps)) - sum(
            p64[i, c] * math.log(max(1 - p64[i, c], eps)) for c in range(3) if c != y)
        assert m[i] == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert h[0] == 0.0 and m[0] == 0.0  # a confident correct prediction
    assert m[1] == pytest.approx(-math.log(eps) + 2 * 0.5 * math.log(2.0), rel=1e-12)  # true class p = 0
    assert m[3] == pytest.approx(-2 * math.log(eps), rel=1e-12)  # a confident mistake: both logs clipped
    assert true_class_prob(p, labels).tolist() == pytest.approx([1.0, 0.0, 0.3, 0.0])


# ------------------------------------------------------------------ results, pooling, validation
def _outputs(n, c=3, seed=0, sensitivity=True, member_rate=0.5):
    rng = np.random.default_rng(seed)
    return ModelOutputs(
        logits=rng.normal(size=(n, c)).astype(np.float32), labels=rng.integers(0, c, n).astype(np.int32),
        member=(np.arange(n) < int(member_rate * n)), sensitivity=rng.random((n, c)) if sensitivity else None)


def _data(k=2, n=6, m=4, c=3, refs=True):
    shadows = [_outputs(5 + j, c, seed=j + 1) for j in range(k)]
    return AttackData(
        target=_outputs(n, c), shadows=shadows, reference_on_target=np.zeros((k, n, c)),
        target_on_population=np.zeros((m, c)), reference_on_population=np.zeros((k, m, c)),
        population_labels=np.zeros(m, dtype=np.int64),
        shadow_references=[np.zeros((k, len(s), c)) for s in shadows] if refs else None)


def test_make_result_names_and_types_its_columns():
    data = _data()
    res = make_result("conf", np.linspace(0, 1, 6).astype(np.float32), [1, 0, 1, 1, 0, 0], data)
    assert res.name == "conf"
    assert res.scores.dtype == np.float64 and res.predictions.dtype == bool
    assert res.predictions.tolist() == [True, False, True, True, False, False]


def test_pooled_shadows_concatenate_in_order_with_int64_labels_and_sensitivity_only_when_all_have_it():
    data = _data(k=2)
    pooled = pooled_shadows(data)
    assert pooled.labels.dtype == np.int64 and pooled.member.dtype == bool
    np.testing.assert_array_equal(pooled.logits, np.concatenate([s.logits for s in data.shadows]))
    np.testing.assert_array_equal(pooled.labels, np.concatenate([s.labels for s in data.shadows]))
    np.testing.assert_array_equal(pooled.sensitivity, np.concatenate([s.sensitivity for s in data.shadows]))
    data.shadows[1].sensitivity = None
    assert pooled_shadows(data).sensitivity is None


def _refused(data) -> str:
    with pytest.raises(ValueError) as info:
        validate_attack_data(data)
    return str(info.value)


def test_every_attack_data_refusal_word_for_word():
    validate_attack_data(_data())  # consistent: no error
    d = _data()
    d.shadows = []
    d.reference_on_target = np.zeros((0, 6, 3))
    assert _refused(d) == "AttackData: at least one shadow model is needed"
    d = _data()
    d.target.member = np.zeros(5, dtype=bool)  # logits right, member one short
    assert _refused(d) == "AttackData: target logits/member shapes disagree"
    d = _data()
    d.shadows[1].logits = np.zeros((6, 4), dtype=np.float32)  # two-dimensional, four classes
    assert _refused(d) == "AttackData: shadow 1 logits must be (n_i, 3)"
    d = _data()
    d.shadows[0].member = np.zeros(4, dtype=bool)
    assert _refused(d) == "AttackData: shadow 0 labels/member shapes"
    d = _data()
    d.reference_on_target = np.zeros((2, 5, 3))
    assert _refused(d) == "AttackData: reference_on_target must be (2, 6, 3), got (2, 5, 3)"
    d = _data()
    d.target_on_population = np.zeros((3, 3))
    assert _refused(d) == "AttackData: target_on_population must be (4, 3), got (3, 3)"
    d = _data()
    d.reference_on_population = np.zeros((1, 4, 3))
    assert _refused(d) == "AttackData: reference_on_population must be (2, 4, 3), got (1, 4, 3)"
    d = _data()
    d.shadow_references = d.shadow_references[:1]
    assert _refused(d) == "AttackData: shadow_references must hold 2 arrays"
    d = _data()
    d.shadow_references[1] = np.zeros((2, 5, 3))  # shadow 1 has 6 samples
    assert _refused(d) == "AttackData: shadow_references[1] must be (2, 6, 3), got (2, 5, 3)"


# ------------------------------------------------------------------ run_attacks
@pytest.fixture
def toy_registry(monkeypatch):
    """Two cheap attacks in a registry of their own, recording the context each one gets."""
    seen = {}
    reg = Registry("attack")

    def attack(name, score):
        def run(data, ctx):
            seen[name] = ctx
            return AttackResult(name, np.full(len(data.target), score), np.zeros(len(data.target), bool),
                                {"balanced_acc": score})
        return run

    reg.register("first", label="First")(attack("first", 0.6))
    reg.register("second", label="Second")(attack("second", 0.7))
    monkeypatch.setattr(runner, "ATTACKS", reg)
    return seen


class _Bar:
    made: list = []

    def __init__(self, items, **kwargs):
        self.items, self.kwargs, self.postfix = items, kwargs, []
        _Bar.made.append(self)

    def __iter__(self):
        return iter(self.items)

    def set_postfix_str(self, text):
        self.postfix.append(text)


def test_run_attacks_defaults_contexts_and_bar(toy_registry, monkeypatch):
    monkeypatch.setattr(runner, "tqdm", _Bar)
    _Bar.made = []
    data = _data()
    results = runner.run_attacks(data)  # None: every registered attack, in registration order
    assert list(results) == ["first", "second"]
    ctx = toy_registry["first"]
    assert (ctx.settings, ctx.training, ctx.device, ctx.seed) == (None, None, "cpu", 0)
    bar = _Bar.made[-1]
    assert bar.kwargs == {"desc": "attacks", "disable": True}  # no bar unless asked for
    assert bar.postfix == ["first", "second"]
    training = object()
    runner.run_attacks(data, ["second"], training=training, device="meta", seed=7, progress=True)
    ctx = toy_registry["second"]
    assert (ctx.training, ctx.device, ctx.seed) == (training, "meta", 7)
    assert _Bar.made[-1].kwargs == {"desc": "attacks", "disable": None}  # tqdm's own TTY check


# ------------------------------------------------------------------ choose_attack
def test_choose_attack_passes_its_arguments_folds_and_picks_the_best_mean(monkeypatch):
    calls = []
    per_fold = iter([{"b_best": 0.9, "z_worst": 0.1, "nan": float("nan")},
                     {"b_best": 0.7, "z_worst": 0.3, "nan": float("nan")}])

    def fake_run(fold, attacks, settings, *, training, device, seed):
        calls.append({"target": fold.target, "attacks": list(attacks), "settings": settings,
                      "training": training, "device": device, "seed": seed})
        values = next(per_fold)
        return {a: AttackResult(a, np.zeros(1), np.zeros(1, bool), {"balanced_acc": values[a]}) for a in attacks}

    monkeypatch.setattr(selection, "run_attacks", fake_run)
    data = _data(k=3)
    settings, training = {"b_best": {"x": 1}}, object()
    chosen, means = selection.choose_attack(data, ["z_worst", "b_best", "nan"], settings, training=training, folds=2)
    # the best mean (not the last name alphabetically, nor the first listed); an all-NaN attack is never chosen
    assert chosen == "b_best"
    assert means["b_best"] == pytest.approx(0.8) and means["z_worst"] == pytest.approx(0.2)
    assert math.isnan(means["nan"])
    assert len(calls) == 2  # folds = 2 of the 3 shadows
    assert [c["target"] for c in calls] == [data.shadows[0], data.shadows[1]]
    assert all(c["settings"] is settings and c["training"] is training for c in calls)
    assert all(c["device"] == "cpu" and c["seed"] == 0 for c in calls)
    per_fold = iter([{"b_best": 0.5}] * 3)
    selection.choose_attack(data, ["b_best"], device="meta", seed=4)
    assert len(calls) == 5 and calls[-1]["device"] == "meta" and calls[-1]["seed"] == 4  # folds=None: all three
