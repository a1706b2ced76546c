"""The paper's experiments as environments (conf/exp_*): each loads through the project's config
loader (sweeps expanded), passes validation, runs real Location with 5 shadows over seeds 42-44,
picks its table layout, and makes the combinations the experiment needs, each its own namespace.
(Every README command, these included, is also dry-run by tests/test_readme_commands.py.)"""

from __future__ import annotations

import pytest

from tests.conftest import REPO
from wemem.config import CONFIG_LOADER_ARGS, ConfigLoader
from wemem.ml.experiment_tables import LAYOUTS
from wemem.ml.grid import combos_from
from wemem.params import validate_parameters

EXPECTED = {  # env: (layout, pruned namespaces per the experiment)
    "exp_rmr_lambda": ("rmr_lambda", ["base", "rmr_lambda_r_0p01", "rmr_lambda_r_0p1", "rmr_lambda_r_1"]),
    "exp_windows": ("windows", ["base"] + [f"{d}_w_{w}_s_{s}_order_{o}" for d in ("rsw", "swmr") for w in (15, 30, 40)
                                           for s in (1, 3) for o in ("h2l", "l2h")]),
    "exp_defenses": ("defenses", ["base", "rsw", "rmr", "swmr", "ppb", "adv", "dpsgd", "relaxloss"]),
    "exp_time_cost": ("time_cost", ["base", "rsw", "rmr", "swmr", "ppb", "adv", "relaxloss", "dpsgd"]),
    "exp_methods_sparsities": ("methods_sparsities", ["base", "rsw", "rmr", "swmr"]),
}


def _params(env: str) -> dict:
    return ConfigLoader(conf_source=str(REPO / "conf"), env=env, **CONFIG_LOADER_ARGS)["parameters"]


@pytest.mark.parametrize("env", list(EXPECTED))
def test_experiment_env_builds_its_grid(env):
    # what it catches: a key the schema refuses, a sweep that does not expand, the wrong dataset,
    # shadow count or seeds, a layout the report does not know, or a missing/extra combination
    params = _params(env)
    validated = validate_parameters(params)
    layout, variants = EXPECTED[env]
    assert validated.dataset == "location" and params["datasets"]["location"]["n_shadows"] == 5
    assert params["repeats"]["seeds"] == [42, 43, 44]
    assert validated.mia_evaluation.experiment_table == layout and layout in LAYOUTS
    combos = combos_from(params["pruning_defense"])
    grid = params["pruning_defense"]["grid"]
    assert sorted({c.variant for c in combos if c.method}) == sorted(variants)
    assert len([c for c in combos if c.method]) == len(grid["methods"]) * len(grid["sparsities"]) * len(variants)
    assert all(c.namespace.count(".") <= 1 for c in combos)


def test_methods_sparsities_is_the_full_three_by_three():
    grid = _params("exp_methods_sparsities")["pruning_defense"]["grid"]
    assert grid["methods"] == ["l1_unstructured", "l1_structured", "l2_structured"]
    assert grid["sparsities"] == [0.5, 0.6, 0.7]
