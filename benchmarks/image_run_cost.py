"""Expected run time of an image environment, from its parameters and measured throughput.

Counts the sample-steps a run makes (one training sample-step = one sample through forward,
backward and the optimiser step; one inference sample = one forward pass) and divides them by
a measured rate (samples/s of the environment's model, ``benchmarks/image_cpu_throughput.py``
for CPUs, ``--gpu-train``/``--gpu-infer`` for a GPU measurement):

  memscore     m · epochs · r · |train pool|                                      training
  models       (1 + n_shadows) · epochs · |model train|  (+ dev pass each epoch)   training
  fine-tuning  rows_pruned · (1 + n_shadows) · n_iter · ft_epochs · |model train|  training
               (+ dev pass each epoch; the one-shot row: one iteration)
  attacks      rows · (1 + n_shadows) · (2 + n_draws) · |model train + model test|  inference

Epoch counts are the caps (early stopping can only shorten a run). Every defense is counted as
costing Base's step; measured exceptions on tabular data: RSW and SWMR train on windows (0.36-
0.38x Base), Adv trains an inference model beside the victim and DP-SGD computes per-sample
gradients (both dearer; not measured on images). The figures are therefore estimates of the
order of magnitude, upper bounds for the Base-like defenses.

    python benchmarks/image_run_cost.py --env image_cifar10_cpu [--throughput JSON]
        [--gpu-train SAMPLES_PER_S --gpu-infer SAMPLES_PER_S]
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THROUGHPUT = ROOT / "benchmarks" / "results" / "image_cpu_throughput.json"
# full sizes of the train / test parts and class counts (SPEC §2)
FULL = {"cifar10": (50000, 10000, 10), "cifar100": (50000, 10000, 100), "cinic10": (90000, 90000, 10)}


def load_params(env: str) -> dict:
    from kedro.config import OmegaConfigLoader

    from wemem.settings import CONFIG_LOADER_ARGS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), env=env, **CONFIG_LOADER_ARGS)
        return dict(loader["parameters"])


def part_sizes(params: dict) -> tuple[int, int]:
    """Train and test part sizes after the loader's class-balanced subset, if any."""
    name = params["dataset"]
    train, test, classes = FULL[name]
    loader = params["datasets"][name].get("loader") or {}
    if loader.get("train_per_class"):
        train = min(train, classes * int(loader["train_per_class"]))
    if loader.get("test_per_class"):
        test = min(test, classes * int(loader["test_per_class"]))
    return train, test


def sample_steps(params: dict) -> dict[str, float]:
    """Training and inference sample counts per stage (SPEC §2 split fractions)."""
    name = params["dataset"]
    ds = params["datasets"][name]
    split = params["data_ingestion"]["split"]
    train_part, test_part = part_sizes(params)
    half = math.floor(train_part * split["victim_fraction"])
    model_train = math.floor(half * split["member_fraction"])
    held_and_test = (half - model_train) + test_part
    dev = math.floor(held_and_test * split["dev_fraction"])
    model_test = held_and_test - dev
    models = 1 + int(ds["n_shadows"])
    ms, tr, pd_ = params["memscore"], params["training"], params["pruning_defense"]
    grid = pd_["grid"]
    pruned_rows = len(grid["methods"]) * len(grid["sparsities"]) * len(grid["defenses"])
    one_shot = len(grid["methods"]) * len(grid["sparsities"]) if pd_["reference"]["one_shot"] else 0
    rows = pruned_rows + one_shot + (1 if pd_["reference"]["unpruned"] else 0)
    ft = pd_["finetune"]["epochs"]
    memscore = 0 if ms.get("import_csv") else ms["m"] * ms["epochs"] * ms["subset_fraction"] * train_part
    n_draws = params["mia_evaluation"].get("samia", {}).get("n_draws", 10)
    return {
        "memscore_train": memscore,
        "models_train": models * tr["epochs"] * model_train,
        "finetune_train": (pruned_rows * pd_["n_iter"] + one_shot) * models * ft * model_train,
        "dev_infer": (models * tr["epochs"] + (pruned_rows * pd_["n_iter"] + one_shot) * models * ft) * dev,
        "attack_infer": rows * models * (2 + n_draws) * (model_train + model_test),
        "model_train_size": model_train,
    }


def estimate(params: dict, train_rate: float, infer_rate: float) -> dict[str, float]:
    steps = sample_steps(params)
    seconds = {
        "memscore_s": steps["memscore_train"] / train_rate,
        "models_s": steps["models_train"] / train_rate,
        "finetune_s": steps["finetune_train"] / train_rate,
        "inference_s": (steps["dev_infer"] + steps["attack_infer"]) / infer_rate,
    }
    seconds["total_s"] = sum(seconds.values())
    totals = {"train_samples": steps["memscore_train"] + steps["models_train"] + steps["finetune_train"],
              "infer_samples": steps["dev_infer"] + steps["attack_infer"]}
    return {**steps, **totals, **seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", required=True)
    ap.add_argument("--throughput", type=Path, default=THROUGHPUT)
    ap.add_argument("--gpu-train", type=float, default=None, help="measured GPU training samples/s")
    ap.add_argument("--gpu-infer", type=float, default=None, help="measured GPU inference samples/s")
    args = ap.parse_args()
    params = load_params(args.env)
    arch = params["datasets"][params["dataset"]]["model"]
    if args.gpu_train:
        train_rate, infer_rate, source = args.gpu_train, args.gpu_infer or 4 * args.gpu_train, "gpu (given)"
    else:
        rates = json.loads(args.throughput.read_text())["models"][arch]
        train_rate, infer_rate = rates["train_samples_per_s"], rates["infer_samples_per_s"]
        source = str(args.throughput.relative_to(ROOT)) if args.throughput.is_relative_to(ROOT) else str(args.throughput)
    out = estimate(params, train_rate, infer_rate)
    print(json.dumps({"env": args.env, "dataset": params["dataset"], "model": arch, "rates_from": source,
                      "train_samples_per_s": train_rate, "infer_samples_per_s": infer_rate,
                      **{k: round(v, 1) for k, v in out.items()},
                      "total_h": round(out["total_s"] / 3600, 2)}, indent=1))


if __name__ == "__main__":
    main()
