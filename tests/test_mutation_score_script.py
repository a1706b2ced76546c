"""benchmarks/mutation_score.py's arithmetic: the seeded sample and the Wilson interval it
reports with a sampled score, and the total that leaves sampled groups out."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import mutation_score as ms


def test_sample_is_seeded_uniform_without_replacement_and_order_free():
    names = [f"m.x_f__mutmut_{i}" for i in range(50)]
    a = ms.sample_names(names, 10, seed=3)
    assert a == ms.sample_names(list(reversed(names)), 10, seed=3)  # the input order does not matter
    assert len(a) == len(set(a)) == 10 and set(a) <= set(names) and a == sorted(a)
    assert a != ms.sample_names(names, 10, seed=4)
    assert ms.sample_names(names[:5], 10, seed=3) == sorted(names[:5])  # all when n ≥ the population
    # uniform: over many seeds every name is drawn about n/N of the time
    counts = {n: 0 for n in names}
    for seed in range(400):
        for n in ms.sample_names(names, 10, seed):
            counts[n] += 1
    assert min(counts.values()) > 400 * 0.2 * 0.6 and max(counts.values()) < 400 * 0.2 * 1.4


def test_wilson_interval_by_hand():
    # k = 45 of n = 50, z = 1.96: centre (0.9 + 1.9208/50) / (1 + 3.8416/50), half-width by the formula
    z, k, n = 1.96, 45, 50
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    assert ms.wilson(k, n) == (round(centre - half, 4), round(centre + half, 4))
    assert ms.wilson(45, 50) == pytest.approx((0.7864, 0.9565), abs=1e-4)  # the textbook value
    low, high = ms.wilson(10, 10)
    assert high == 1.0 and 0.69 < low < 0.73
    assert ms.wilson(0, 0) is None


def test_total_leaves_sampled_groups_out(tmp_path, monkeypatch):
    monkeypatch.setattr(ms, "RESULTS", tmp_path)
    monkeypatch.setattr(ms, "_version", lambda: "3.8.1")  # mutmut is not installed by .[test]
    out = tmp_path / "mutation_score.json"
    full = {"files": [], "tests": [], "counts": {"killed": 9, "survived": 1}, "mutants": 10, "killed": 9,
            "equivalent": 0, "score": 0.9, "raw_score": 0.9, "seconds": 1.0, "ran": "2026-12-07", "survivors": []}
    sampled = {**full, "counts": {"killed": 3, "survived": 1}, "mutants": 4, "killed": 3, "score": 0.75,
               "raw_score": 0.75, "sample": {"n": 4, "population": 40, "seed": 0, "score_ci95": ms.wilson(3, 4)}}
    ms.write("pruning", full, out)
    ms.write("attacks_model", sampled, out)
    report = json.loads(out.read_text())
    assert report["total"]["mutants"] == 10 and report["total"]["score"] == 0.9
    assert report["total"]["sampled_groups_left_out"] == ["attacks_model"]
    md = out.with_suffix(".md").read_text()
    assert "attacks_model (sample of 4 of 40, 95% CI" in md and "(full runs; sampled groups left out)" in md


def test_rejudge_reads_the_notes_again_and_counts_only_equivalent_ones(tmp_path, monkeypatch):
    notes = tmp_path / "equivalent.json"
    notes.write_text(json.dumps({"m.a": "x is y; equivalent", "m.b": "harmless: a log line"}))
    monkeypatch.setattr(ms, "EQUIVALENT", notes)
    group = {"counts": {"killed": 7, "survived": 3}, "mutants": 10, "killed": 7, "equivalent": 0, "score": 0.7,
             "survivors": [{"mutant": "m.a", "equivalent": None}, {"mutant": "m.b", "equivalent": None},
                           {"mutant": "m.c", "equivalent": None}]}
    out = ms.rejudge(group)
    assert [s["equivalent"] for s in out["survivors"]] == ["x is y; equivalent", "harmless: a log line", None]
    assert out["equivalent"] == 1 and out["score"] == round(7 / 9, 4)  # a harmless survivor still counts against
