"""Sweeps expand into one defense variant per point, with readable namespace-safe names."""

from __future__ import annotations

import pytest

from wemem.ml.grid import combos_from
from wemem.ml.sweeps import enabled, expand, point_name, problems

DEFENSES = {"base": {"defense": "base"}, "rmr": {"defense": "rmr", "lambda_r": 0.1, "lambda_g": 5e-4},
            "rsw": {"defense": "rsw", "order": "l2h"}, "swmr": {"defense": "swmr", "order": "h2l", "lambda_r": 0.1}}


def _params(sweeps, enable):
    return {"defenses": DEFENSES, "sweeps": sweeps,
            "pruning_defense": {"grid": {"methods": ["l1_unstructured"], "sparsities": [0.6],
                                         "defenses": ["base"], "sweeps": enable}}}


def test_names_are_namespace_safe():
    # what it catches: a dot in a name (Kedro namespaces split at dots) or an unreadable name
    assert point_name("rmr", {"lambda_r": 0.01}) == "rmr_lambda_r_0p01"
    assert point_name("rmr", {"lambda_r": 1.0}) == "rmr_lambda_r_1"
    assert point_name("rsw", {"w": 15, "s": 1, "order": "h2l"}) == "rsw_w_15_s_1_order_h2l"
    assert point_name("dp", {"sigma": -0.5}) == "dp_sigma_m0p5"


def test_enabled_accepts_a_list_or_a_plus_joined_string():
    # what it catches: the command-line form (one string: Kedro splits --params at commas) being ignored
    assert enabled({"sweeps": "a+b"}) == ["a", "b"]
    assert enabled({"sweeps": ["a"]}) == ["a"]
    assert enabled({"sweeps": None}) == enabled({}) == enabled({"sweeps": ""}) == []


def test_rmr_sweep_expands_into_three_variants_and_namespaces():
    # what it catches: a varied setting not replacing the starting variant's, the other settings lost,
    # or the enabled sweep not reaching the grid
    out = expand(_params({"rmr_lambda": {"variants": "rmr", "vary": {"lambda_r": [0.01, 0.1, 1]}}}, "rmr_lambda"))
    assert out["defenses"]["rmr_lambda_r_0p01"] == {"defense": "rmr", "lambda_r": 0.01, "lambda_g": 5e-4}
    assert out["defenses"]["rmr_lambda_r_1"]["lambda_r"] == 1
    assert out["pruning_defense"]["grid"]["defenses"] == ["base", "rmr_lambda_r_0p01", "rmr_lambda_r_0p1",
                                                          "rmr_lambda_r_1"]
    spaces = [c.namespace for c in combos_from(out["pruning_defense"])]
    assert "l1_unstructured_s60.rmr_lambda_r_0p01" in spaces and len(spaces) == 2 + 4  # unpruned, one_shot


def test_window_sweep_is_the_product_over_variants():
    # what it catches: a missing point of w × s × order × {rsw, swmr}
    spec = {"variants": ["rsw", "swmr"], "vary": {"w": [10, 20], "s": [1, 2, 3], "order": ["h2l", "l2h"]}}
    out = expand(_params({"windows": spec}, ["windows"]))
    made = [v for v in out["pruning_defense"]["grid"]["defenses"] if v != "base"]
    assert len(made) == 2 * 2 * 3 * 2 == len(set(made))
    assert out["defenses"]["swmr_w_20_s_3_order_l2h"] == {"defense": "swmr", "order": "l2h", "lambda_r": 0.1,
                                                          "w": 20, "s": 3}


def test_a_sweep_not_enabled_defines_variants_but_runs_nothing():
    out = expand(_params({"rmr_lambda": {"variants": "rmr", "vary": {"lambda_r": [0.5]}}}, []))
    assert "rmr_lambda_r_0p5" in out["defenses"] and out["pruning_defense"]["grid"]["defenses"] == ["base"]


@pytest.mark.parametrize("sweeps, enable, expected", [
    ({"s": {"variants": "rmrr", "vary": {"lambda_r": [1]}}}, [], "sweeps.s.variants = 'rmrr': no such variant"),
    ({"s": {"variants": "rmr", "vary": {"lambda_r": 1}}}, [], "vary.lambda_r = 1: Input should be a valid list"),
    ({"s": {"variants": "rmr", "vry": {}}}, [], "vry = {}: unknown setting"),
    ({"s": {"variants": "rmr", "vary": {"lambda_r": []}}}, [], "sweeps.s.vary.lambda_r = []: empty"),
    ({"s": {"variants": "rmr", "vary": {"defense": ["rsw"]}}}, [], "a sweep cannot change the defense"),
    ({"s": {"variants": "rmr", "vary": {"lambda_r": ["a/b"]}}}, [], "cannot name a namespace"),
    ({"s": {"variants": "rmr", "vary": {"lambda_r": [1]}}}, "ss", "pruning_defense.grid.sweeps[0] = 'ss': no such sweep"),
    ({"s": {"variants": "rmr", "vary": {"lambda_r": [1]}}, "t": {"variants": "rmr", "vary": {"lambda_r": [1.0]}}},
     [], "makes variant 'rmr_lambda_r_1' again"),
])
def test_problems_name_the_path_and_what_is_allowed(sweeps, enable, expected):
    # what it catches: a bad spec expanding silently, or an error that does not say where
    found = problems(_params(sweeps, enable))
    assert any(expected in p and "allowed" in p for p in found), found
    assert expand(_params(sweeps, enable))["defenses"] == DEFENSES  # nothing expanded: validation reports


def test_a_sweep_cannot_redefine_an_existing_variant():
    params = _params({"s": {"variants": "rmr", "vary": {"lambda_r": [0.2]}}}, [])
    params["defenses"] = {**DEFENSES, "rmr_lambda_r_0p2": {"defense": "rmr", "lambda_r": 0.3}}
    assert any("already defines differently" in p for p in problems(params))
