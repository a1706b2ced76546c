"""The image path end to end (issue 18): a CIFAR-10-format fixture through all five pipelines,
all eight defenses and all ten attacks on ResNet18, at tiny sizes.

This is ``kedro run --params dataset=cifar10`` with the default grid (L1 unstructured at 60%,
the eight defenses, plus the unpruned and one-shot references: ten rows), shrunk only in data
(100 train and 20 test images), epochs and model counts. Measured on a shared 2-core machine:
see the README's "Image experiments" section for its time.
"""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from tests.conftest import make_project, run_session
from tests.ml.conftest import make_cifar10

pytestmark = pytest.mark.slow

DEFENSES = ["base", "rsw", "rmr", "swmr", "ppb", "adv", "dpsgd", "relaxloss"]
ATTACKS = ["conf", "entr", "mentr", "hconf", "nn", "top3_nn", "ci_nn", "samia", "lira", "rmia"]

IMAGE_PARAMS = {
    "dataset": "cifar10",
    "datasets": {"cifar10": {"n_shadows": 1, "defense_defaults": {"w": 8, "s": 2, "tau": 0.5}}},
    "data_ingestion": {"download": False},
    "memscore": {"m": 4, "epochs": 1, "n_shards": 2, "batch_size": 32},
    "training": {"epochs": 1, "patience": 1, "batch_size": 32},
    "pruning_defense": {"n_iter": 2, "finetune": {"epochs": 1, "patience": 1, "batch_size": 32}},
    "mia_evaluation": {"attack_model": {"epochs": 2, "batch_size": 64, "milestones": [1, 2]},
                       "samia": {"n_draws": 2}},
    "progress": False,
}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("image_run"))
    make_cifar10(project / "data" / "01_raw" / "cifar10", n_per_batch=20)  # 5×20 train, 20 test
    run_session(project, runtime_params=copy.deepcopy(IMAGE_PARAMS))
    return project


def _latest(path):
    return sorted(p for p in path.iterdir() if p.is_dir())[-1] / path.name


def test_image_run_every_row_ok(image_run):
    # catches: any defense, attack or pruning step that breaks on a conv/BatchNorm model
    table = pd.read_csv(_latest(image_run / "data" / "08_reporting" / "defense_comparison.csv"))
    assert list(table["defense"]) == ["unpruned", "one_shot", *DEFENSES]
    assert (table["status"] == "ok").all(), table[["defense", "status"]].to_string()
    for attack in ATTACKS:
        assert table[f"{attack}_acc"].between(0, 1).all(), attack
        assert table[f"{attack}_auc"].between(0, 1).all(), attack
    pruned = table[table["pruning_method"] != "none"]
    assert pruned["final_sparsity"].between(0.59, 0.61).all()
    assert table.loc[table["defense"] == "dpsgd", "epsilon"].gt(0).all()
