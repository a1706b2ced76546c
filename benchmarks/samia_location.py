"""Benchmark: SAMIA on real Location -- today's training (every pooled shadow sample, width 64)
against cheaper settings, in one run, on the unpruned victim and its shadows.

SAMIA's Transformer has one token per class, so its cost grows with pooled samples × classes:
Location's 30 classes and 5 shadows (≈ 13k pooled samples) made it the slowest node of a full
run. Each configuration trains the attack model with the project's default attack settings
(``mia_evaluation.attack_model``: 15 epochs, batch 256, SGD lr 0.02) and is scored on the
victim's members vs non-members (AUC, balanced accuracy, TPR@1%FPR) and timed.

Steps: load Location from the archive, split it (SPEC §2, the project's seed and fractions),
train the victim and 5 shadows (``train_roles``, the project's training settings), compute the
model outputs with SAMIA's sensitivity signal (``model_outputs``), then run SAMIA per setting.

    .venv/bin/python benchmarks/samia_location.py [--location-dir DIR] [--threads 1]
        [--configs full,max4000,max4000_w32]

Writes benchmarks/results/samia_location.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from wemem.ml.attacks import ATTACKS, AttackModelSettings
from wemem.ml.attacks.base import AttackContext
from wemem.ml.attacks.classifier import SamiaSettings
from wemem.ml.data import load_dataset, make_splits
from wemem.ml.evaluation import attack_data, model_outputs
from wemem.ml.experiment import describe_data
from wemem.ml.roles import train_roles
from wemem.ml.train import TrainSettings

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "base"
RESULTS = ROOT / "benchmarks" / "results" / "samia_location.json"
CONFIGS = {
    "full": {},
    "max4000": {"max_train": 4000},
    "max4000_w32": {"max_train": 4000, "width": 32},
    "max2000": {"max_train": 2000},
    "w32": {"width": 32},
    "w32_l2": {"width": 32, "layers": 2},
    "w16_l2": {"width": 16, "layers": 2, "heads": 2},
    "e5": {"epochs": 5},
    "e4": {"epochs": 4},
    "e5_w32": {"epochs": 5, "width": 32},
    "max6000_e8": {"max_train": 6000, "epochs": 8},
}


def _yaml(name: str) -> dict:
    return yaml.safe_load((CONF / name).read_text())


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--location-dir", default=str(ROOT.parent / "shared" / "datasets" / "location"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", default="full,max4000,max4000_w32")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    params = _yaml("parameters.yml")
    seed = int(params["seed"])
    ds = params["datasets"]["location"]
    split = _yaml("parameters_data_ingestion.yml")["data_ingestion"]["split"]
    evaluation = _yaml("parameters_mia_evaluation.yml")["mia_evaluation"]
    training = TrainSettings(**_yaml("parameters_pruning_defense.yml")["training"])
    attack_model = AttackModelSettings(**evaluation["attack_model"])
    base_samia = SamiaSettings(**evaluation["samia"])
    device = torch.device("cpu")

    t0 = time.perf_counter()
    raw = load_dataset("location", args.location_dir, download=False)
    arrays, info = describe_data(raw, args.location_dir)
    splits = make_splits(raw.labels, test_mask=raw.test_mask, seed=seed, n_shadows=int(ds["n_shadows"]), **split)
    payload, _ = train_roles(arrays, splits, info, ds["model"], training, seed, device, progress=False)
    outputs = model_outputs(payload, arrays, splits, info, ds["model"], base_samia, seed, device)
    data = attack_data(outputs)
    prepare = time.perf_counter() - t0
    pooled = int(sum(len(s) for s in data.shadows))
    print(f"location: victim + {len(data.shadows)} shadows trained, outputs in {prepare:.1f}s; "
          f"{pooled} pooled shadow samples, {int(info['num_classes'])} classes")

    results = {}
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        settings = SamiaSettings(**{**base_samia.as_dict(), **CONFIGS[name]})
        ctx = AttackContext(settings=settings, training=attack_model, device="cpu", seed=seed)
        load = round(os.getloadavg()[0], 2)
        start = time.perf_counter()
        result = ATTACKS["samia"].obj(data, ctx)
        seconds = time.perf_counter() - start
        m = result.metrics
        results[name] = {"settings": CONFIGS[name], "seconds": round(seconds, 2), "load_before": load,
                         **{k: round(float(v), 4) for k, v in m.items()}}
        print(f"{name:>12}: {seconds:7.1f}s  auc {m['auc']:.4f}  balanced acc {m['balanced_acc']:.4f}  "
              f"tpr@1%fpr {m['tpr_at_1fpr']:.4f}")
    record = {
        "benchmark": "samia_location",
        "what": "SAMIA on the unpruned Location victim (5 shadows): all pooled shadow samples vs a "
                "seeded subsample (max_train) and a narrower Transformer, same attack training",
        "pooled_shadow_samples": pooled,
        "classes": int(info["num_classes"]),
        "attack_model": attack_model.as_dict(),
        "threads": args.threads,
        "seed": seed,
        "prepare_seconds": round(prepare, 1),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "configs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
