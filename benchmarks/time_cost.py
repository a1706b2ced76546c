"""Benchmark: the paper's time-cost table -- victim fine-tuning seconds per defense.

For each dataset (default: the project's default dataset ``mnist1d`` with its default loader
settings, and ``location`` from the real archive), in one process:

1. load the data and split it (SPEC §2, ``make_splits`` with the project's seed and fractions);
2. train the victim once with ``train.fit`` (the settings of ``training`` in
   ``conf/base/parameters_pruning_defense.yml``: up to 100 epochs, patience 5, Adam);
3. memorisation scores of the train pool: ``estimate_shard`` with a small ``--memscore-m``
   (default 16 models; the project's memscore settings otherwise) or ``--scores-csv`` files in
   the reference format;
4. for every defense (base, rsw, rmr, swmr, ppb, adv, dpsgd, relaxloss; settings from
   ``defenses`` in the same file plus the dataset's ``defense_defaults``: Location w=15, s=1,
   tau=0.6, lambda_r=0.1), a copy of the same trained victim goes through ``prune_and_finetune``:
   l1_unstructured to sparsity 0.6 in 5 iterations, each fine-tuning up to 21 epochs with
   patience 6 (``finetune_config``).

Recorded per defense: ``finetune_seconds`` (wall time of the whole prune + fine-tune schedule),
the epochs run and the samples trained in each iteration, the victim's test accuracy after it,
and the 1-minute load average before and after. With ``--repeats 2`` the defenses run a second
time in reverse order and the median is reported. The paper's claim checked: RSW's fine-tuning
time is below Base's (RSW trains each epoch on w samples per class only).

The machine may be shared: torch runs with ``--threads`` (default 1) so that a busy second core
does not stall an OpenMP team; the table is about ratios between defenses timed back to back.

    .venv/bin/python benchmarks/time_cost.py [--datasets mnist1d,location] [--memscore-m 16]
        [--scores-csv location=PATH] [--threads 1] [--repeats 1] [--device cpu] [--out PATH]

Writes benchmarks/results/time_cost.json and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from wemem.ml.data import load_dataset, make_splits
from wemem.ml.defenses import DEFENSES as DEFENSE_REGISTRY
from wemem.ml.defenses import finetune_config, prune_and_finetune, resolve_settings
from wemem.ml.experiment import role_data, role_scores, role_seed
from wemem.ml.memorization import MemScoreSettings, estimate_shard, import_reference_csv, scores_table
from wemem.ml.models import build_model
from wemem.ml.train import TrainConfig, accuracy, fit, resolve_device, seed_everything

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "base"
RESULTS = ROOT / "benchmarks" / "results" / "time_cost.json"
DEFENSES = ["base", "rsw", "rmr", "swmr", "ppb", "adv", "dpsgd", "relaxloss"]
METHOD, SPARSITY = "l1_unstructured", 0.6


def _yaml(name: str) -> dict:
    return yaml.safe_load((CONF / name).read_text())


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _config() -> dict[str, Any]:
    params = _yaml("parameters.yml")
    pd_params = _yaml("parameters_pruning_defense.yml")
    return {
        "seed": int(params["seed"]),
        "datasets": params["datasets"],
        "split": _yaml("parameters_data_ingestion.yml")["data_ingestion"]["split"],
        "memscore": _yaml("parameters_memscore.yml")["memscore"],
        "training": pd_params["training"],
        "pruning": pd_params["pruning_defense"],
        "defenses": pd_params["defenses"],
    }


def _raw_dir(name: str, args: argparse.Namespace, tmp: Path) -> str:
    if name == "location":
        return args.location_dir
    if name == "mnist1d":
        return str(tmp / "mnist1d")  # generated locally; the cache goes to a temporary folder
    return str(ROOT / "data" / "01_raw" / name)


def _scores(name: str, x_pool: np.ndarray, y_pool: np.ndarray, num_classes: int, conf: dict,
            args: argparse.Namespace, device: str) -> tuple[Any, dict]:
    csvs = dict(item.split("=", 1) for item in args.scores_csv)
    if name in csvs:
        table = import_reference_csv(csvs[name], y_pool)
        return table, {"source": f"csv {csvs[name]}"}
    cfg = MemScoreSettings.model_validate({**conf["memscore"], "m": args.memscore_m})
    stats = estimate_shard(x_pool, y_pool, list(range(cfg.m)), cfg, arch="column_fc", seed=conf["seed"], device=device,
                           progress=False, num_classes=num_classes)
    info = {"source": "estimate_shard", "m": cfg.m, "epochs": cfg.epochs, "estimator": cfg.estimator,
            "seconds": round(stats.seconds, 2), "mean_epochs_run": round(float(np.mean(stats.epochs_run)), 2)}
    return scores_table(stats, y_pool), info


def prune_finetune_victim(victim: torch.nn.Module, role, conf: dict, device: torch.device, defense: str, settings,
                          *, seed: int, desc: str, scores: np.ndarray | None = None):
    """A copy of the trained victim through the benchmarks' schedule (``METHOD`` to ``SPARSITY``
    in ``pruning.n_iter`` iterations, fine-tuning as ``pruning.finetune``) under ``defense``;
    returns (model, the ``prune_and_finetune`` record, the load average just before)."""
    ft = conf["pruning"]["finetune"]
    seed_everything(seed)
    model = copy.deepcopy(victim).train()
    cfg = finetune_config(epochs=int(ft["epochs"]), patience=int(ft["patience"]), batch_size=int(ft["batch_size"]),
                          lr=float(ft["lr"]), device=str(device), seed=seed, progress=False, desc=desc)
    load_before = _load()
    model, record = prune_and_finetune(
        model, method=METHOD, final_sparsity=SPARSITY, n_iter=int(conf["pruning"]["n_iter"]), defense=defense,
        settings=settings, train=role.train, dev=role.dev, test=role.test, scores=scores, cfg=cfg,
    )
    return model, record, load_before


def _finetune(name: str, victim: torch.nn.Module, role, scores: np.ndarray, info: dict, conf: dict,
              device: torch.device) -> dict:
    """One defense from the trained victim; returns the timing record."""
    variant = conf["defenses"][name]
    defense = variant.get("defense", name)
    settings = resolve_settings(defense, variant, conf["datasets"][info["name"]]["defense_defaults"])
    seed = role_seed(conf["seed"], 0, "prune")  # as the pruning_defense pipeline seeds the victim (role 0)
    model, record, load_before = prune_finetune_victim(
        victim, role, conf, device, defense, settings, seed=seed, desc=f"time_cost {info['name']}",
        scores=scores if "scores" in DEFENSE_REGISTRY[defense].needs else None,
    )
    its = record["iterations"]
    rec = {
        "seconds": round(record["finetune_seconds"], 3),
        "epochs_per_iteration": [int(it["epochs_run"]) for it in its],
        "samples_trained_per_iteration": [int(sum(h.get("samples", 0) for h in it["history"])) for it in its],
        "seconds_per_iteration": [round(it["seconds"], 3) for it in its],
        "test_acc": round(accuracy(model, *role.test), 4),
        "final_global_sparsity": round(record["final_global_sparsity"], 4),
        "settings": {k: (v if not isinstance(v, float) else round(v, 6)) for k, v in record["settings"].items()},
        "load_before": load_before,
        "load_after": _load(),
    }
    if "epsilon" in record:
        rec["epsilon"] = round(float(record["epsilon"]), 4)
    return rec


def run_dataset(name: str, conf: dict, args: argparse.Namespace, tmp: Path, device: torch.device) -> dict:
    ds_conf = conf["datasets"][name]
    t0 = time.perf_counter()
    raw = load_dataset(name, _raw_dir(name, args, tmp), download=False, **(ds_conf.get("loader") or {}))
    splits = make_splits(raw.labels, test_mask=raw.test_mask, seed=conf["seed"],
                         n_shadows=int(ds_conf["n_shadows"]), **conf["split"])
    arrays = {"features": raw.features, "labels": raw.labels}
    role = role_data(arrays, splits, "victim", device)
    info = {"name": name, "defense_defaults": dict(ds_conf.get("defense_defaults", {}))}
    print(f"{name}: {raw.labels.size} samples, victim train/dev/test "
          f"{role.train[0].shape[0]}/{role.dev[0].shape[0]}/{role.test[0].shape[0]}", flush=True)

    # the victim, trained once (as train_original_models trains role 0)
    tr = conf["training"]
    seed_everything(conf["seed"])
    victim = build_model(ds_conf["model"], tuple(raw.features.shape[1:]), raw.num_classes).to(device)
    tcfg = TrainConfig(epochs=int(tr["epochs"]), patience=int(tr["patience"]), batch_size=int(tr["batch_size"]),
                       lr=float(tr["lr"]), weight_decay=float(tr["weight_decay"]), device=str(device),
                       seed=conf["seed"], progress=False, desc=f"victim {name}")
    res = fit(victim, role.train, role.dev, tcfg)
    victim_rec = {"epochs_run": res.epochs_run, "best_epoch": res.best_epoch, "seconds": round(res.seconds, 2),
                  "train_acc": round(accuracy(victim, *role.train), 4),
                  "test_acc": round(accuracy(victim, *role.test), 4)}
    print(f"  victim: test acc {victim_rec['test_acc']}, {res.epochs_run} epochs, {res.seconds:.1f}s", flush=True)

    pool = splits["train_pool"]
    table, score_info = _scores(name, raw.features[pool], raw.labels[pool], raw.num_classes, conf, args, str(device))
    scores = role_scores(table, splits, role.train_rows)
    score_info["victim_frac_score_ge_tau"] = round(float((scores >= info["defense_defaults"].get("tau", 1.0)).mean()), 4)
    print(f"  memscores: {score_info}", flush=True)

    runs: dict[str, list[dict]] = {d: [] for d in args.defenses}
    for r in range(args.repeats):
        order = args.defenses if r % 2 == 0 else list(reversed(args.defenses))
        for d in order:
            rec = _finetune(d, victim, role, scores, info, conf, device)
            runs[d].append(rec)
            print(f"  [{r + 1}] {d:10s} {rec['seconds']:8.2f}s  epochs {rec['epochs_per_iteration']}  "
                  f"test {rec['test_acc']:.4f}  load {rec['load_before']} -> {rec['load_after']}", flush=True)
    table_out = {}
    for d, recs in runs.items():
        out = dict(recs[0])
        out["seconds"] = round(statistics.median(x["seconds"] for x in recs), 3)
        if len(recs) > 1:
            out["seconds_all_runs"] = [x["seconds"] for x in recs]
            out["load_before_after_all_runs"] = [[x["load_before"], x["load_after"]] for x in recs]
        table_out[d] = out
    result = {
        "dataset": name,
        "samples": int(raw.labels.size),
        "features": list(raw.features.shape[1:]),
        "num_classes": int(raw.num_classes),
        "model": ds_conf["model"],
        "victim_split": {"train": int(role.train[0].shape[0]), "dev": int(role.dev[0].shape[0]),
                         "test": int(role.test[0].shape[0])},
        "defense_defaults": info["defense_defaults"],
        "victim": victim_rec,
        "memscores": score_info,
        "defenses": table_out,
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    if "base" in table_out and "rsw" in table_out:
        b, s = table_out["base"]["seconds"], table_out["rsw"]["seconds"]
        result["rsw_faster_than_base"] = bool(s < b)
        result["rsw_over_base_time"] = round(s / b, 3)
    if "base" in table_out:
        b = table_out["base"]["seconds"]
        result["relative_to_base"] = {d: round(v["seconds"] / b, 3) for d, v in table_out.items()}
    return result


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="mnist1d,location")
    ap.add_argument("--defenses", default=",".join(DEFENSES))
    ap.add_argument("--location-dir", default="/work/shared/datasets/location")
    ap.add_argument("--memscore-m", type=int, default=16)
    ap.add_argument("--scores-csv", action="append", default=[], metavar="DATASET=PATH",
                    help="reference-format score CSV of a dataset's train pool instead of estimating")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per defense (alternating order); median reported")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    args.defenses = [d.strip() for d in args.defenses.split(",") if d.strip()]
    unknown = sorted(set(args.defenses) - set(DEFENSES))
    if unknown:
        raise SystemExit(f"unknown defense(s) {unknown}; choose from {DEFENSES}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    conf = _config()
    result: dict = {
        "benchmark": "time_cost",
        "what": f"victim fine-tuning seconds per defense: {METHOD} to sparsity {SPARSITY}, "
                f"{conf['pruning']['n_iter']} iterations, up to {conf['pruning']['finetune']['epochs']} epochs "
                f"(patience {conf['pruning']['finetune']['patience']}), all defenses from the same trained victim",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "seed": conf["seed"],
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "datasets": {},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "machine": platform.machine(), "cpu_count": os.cpu_count()},
    }
    with tempfile.TemporaryDirectory(prefix="wemem_time_cost_") as tmp:
        for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
            result["datasets"][name] = run_dataset(name, conf, args, Path(tmp), device)
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    claims = {n: r.get("rsw_faster_than_base") for n, r in result["datasets"].items()}
    result["paper_claim_rsw_faster_than_base"] = claims

    print("\nseconds per defense (victim fine-tuning)")
    names = list(result["datasets"])
    print(f"{'defense':10s} " + " ".join(f"{n:>12s}" for n in names))
    for d in args.defenses:
        print(f"{d:10s} " + " ".join(f"{result['datasets'][n]['defenses'][d]['seconds']:12.2f}" for n in names))
    print(f"RSW faster than Base: {claims}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
