"""The image experiment environments (conf/image_*): each loads, passes the project's parameter
validation, pairs the paper's model with its dataset, and the CPU variants stay within their
30-minute budget by the measured-throughput estimate. Nothing is run."""

from __future__ import annotations

import json

import pytest

from benchmarks.image_run_cost import THROUGHPUT, estimate, load_params, part_sizes
from wemem.params import validate_parameters

PAPER = {  # env: (dataset, model, w, s, tau) from the paper's table (SPEC §7)
    "image_cifar10": ("cifar10", "vgg16_bn", 500, 50, 0.5),
    "image_cifar100": ("cifar100", "resnet18", 50, 5, 0.6),
    "image_cinic10": ("cinic10", "densenet121", 900, 100, 0.65),
}


@pytest.mark.parametrize("env", [*PAPER, *(f"{e}_cpu" for e in PAPER)])
def test_image_env_validates(env):
    # catches: a key the schema rejects, a loader option the loader lacks, a dataset/model mix-up
    params = load_params(env)
    validated = validate_parameters(params)
    dataset, model, w, s, tau = PAPER[env.removesuffix("_cpu")]
    assert validated.dataset == dataset
    settings = params["datasets"][dataset]
    assert settings["model"] == model
    assert settings["defense_defaults"]["tau"] == tau
    assert params["pruning_defense"]["n_iter"] == 5
    if env in PAPER:  # the paper's grid and window settings
        assert (settings["defense_defaults"]["w"], settings["defense_defaults"]["s"]) == (w, s)
        grid = params["pruning_defense"]["grid"]
        assert grid["sparsities"] == [0.5, 0.6, 0.7] and len(grid["methods"]) == 3 and len(grid["defenses"]) == 8
        assert settings["n_shadows"] == 5
    else:  # class-balanced subset, seeded
        assert {"train_per_class", "test_per_class", "seed"} <= set(settings["loader"])


@pytest.mark.parametrize("env", [f"{e}_cpu" for e in PAPER])
def test_cpu_variant_fits_thirty_minutes_on_measured_throughput(env):
    # catches: a CPU variant grown past its budget (estimate from the committed CPU measurement)
    params = load_params(env)
    rates = json.loads(THROUGHPUT.read_text())["models"][params["datasets"][params["dataset"]]["model"]]
    est = estimate(params, rates["train_samples_per_s"], rates["infer_samples_per_s"])
    assert est["total_s"] <= 30 * 60, est
    train, test = part_sizes(params)
    assert est["model_train_size"] >= {"cifar10": 10, "cifar100": 100, "cinic10": 10}[params["dataset"]]
    assert train > 0 and test > 0


def test_cost_counts_known_answer():
    # catches: a wrong split size or stage count in the estimate (hand count for image_cifar10_cpu:
    # 300 train images -> half 150 -> 135 members; 100 test + 15 held-out -> dev 39, test 76;
    # fine-tuning (1 method x 1 sparsity x 8 defenses x 5 iterations + 1 one-shot) x 2 models x 1 epoch x 135)
    params = load_params("image_cifar10_cpu")
    est = estimate(params, 1.0, 1.0)
    assert est["model_train_size"] == 135
    assert est["finetune_train"] == (8 * 5 + 1) * 2 * 1 * 135
    assert est["memscore_train"] == pytest.approx(8 * 2 * 0.7 * 300)
    assert est["attack_infer"] == 10 * 2 * 4 * (135 + 76)
