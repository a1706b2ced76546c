"""Benchmark: DP-SGD fine-tuning, today's vectorised step against the old Opacus hooks step, and
both against Base, on real Location.

In one process (as ``benchmarks/time_cost.py`` does it):

1. load Location from the archive, split it (SPEC §2) and train the victim once with
   ``train.fit`` (the ``training`` settings of ``conf/base/parameters_pruning_defense.yml``);
2. from copies of that victim, ``prune_and_finetune`` with l1_unstructured to sparsity 0.6 in
   5 iterations (SPEC §6 fine-tuning: up to 21 epochs, patience 6, batch 128, Adam lr 1e-3)
   under three defenses:

   - ``base``: plain fine-tuning;
   - ``dpsgd_old``: the previous implementation, kept as
     ``benchmarks/reference/dpsgd_opacus.py`` (Opacus ``GradSampleModule`` in its default
     "hooks" mode + ``DPOptimizer``, shuffled fixed-size batches);
   - ``dpsgd``: the library's DP-SGD (Poisson sampling, vectorised per-sample clipping with
     ghost norms for Linear layers);

   both DP variants with the same σ, clip and δ (default σ = 1, C = 1, δ = 1e-5), so their ε
   differs only through the number of steps early stopping lets them run.

Recorded per variant: fine-tuning seconds (whole schedule), steps, milliseconds per step,
epochs per iteration, the victim's test accuracy afterwards, ε and the load average before and
after; the ratios DP / Base. With ``--repeats`` > 1 (default 3) the variants run again in alternating
order (each repeat r with fine-tuning seed + 100·r, so batches and noise differ): median seconds,
mean ± std test accuracy.

    .venv/bin/python benchmarks/dp_speed.py [--location-dir DIR] [--threads 1] [--repeats 3]
        [--sigma 1.0] [--clip 1.0] [--delta 1e-5] [--device cpu] [--out PATH]

Writes benchmarks/results/dp_speed.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from wemem.ml.data import load_dataset, make_splits
from wemem.ml.defenses import DEFENSES
from wemem.ml.experiment import role_data, role_seed
from wemem.ml.models import build_model
from wemem.ml.train import TrainConfig, accuracy, fit, resolve_device, seed_everything

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make benchmarks.* importable
    sys.path.insert(0, str(ROOT))
from benchmarks.reference.dpsgd_opacus import OpacusHooksDPSGD  # noqa: E402
from benchmarks.time_cost import METHOD, SPARSITY, _config, _load, prune_finetune_victim  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "dp_speed.json"
OLD = "dpsgd_opacus_hooks"


def _variants(args: argparse.Namespace) -> dict[str, tuple[str, dict]]:
    dp = {"sigma": args.sigma, "clip": args.clip, "delta": args.delta}
    return {"base": ("base", {}), "dpsgd_old": (OLD, dp), "dpsgd": ("dpsgd", dp)}


def _finetune(defense: str, settings: dict, victim: torch.nn.Module, role, conf: dict, device: torch.device,
              repeat: int) -> dict:
    ft = conf["pruning"]["finetune"]
    seed = role_seed(conf["seed"], 0, "prune") + 100 * repeat  # each repeat its own batches and noise
    model, record, load_before = prune_finetune_victim(victim, role, conf, device, defense, settings, seed=seed,
                                                       desc=f"dp_speed {defense}")
    its = record["iterations"]
    batch, n = int(ft["batch_size"]), int(role.train[0].shape[0])
    epochs = [int(it["epochs_run"]) for it in its]
    last = record["summaries"][-1]
    # steps: the DP strategies count them; Base takes ceil(n / batch) per epoch
    steps = int(last["dp_steps"]) if "dp_steps" in last else sum(epochs) * -(-n // batch)
    seconds = record["finetune_seconds"]
    rec = {
        "seconds": round(seconds, 3),
        "steps": steps,
        "ms_per_step": round(1000 * seconds / steps, 3),
        "epochs_per_iteration": epochs,
        "seconds_per_iteration": [round(it["seconds"], 3) for it in its],
        "test_acc": round(accuracy(model, *role.test), 4),
        "final_global_sparsity": round(record["final_global_sparsity"], 4),
        "load_before": load_before,
        "load_after": _load(),
    }
    if "epsilon" in record:
        rec["epsilon"] = round(float(record["epsilon"]), 4)
        rec["delta"] = record["delta"]
        rec["sample_rate"] = round(float(last["sample_rate"]), 6)
    return rec


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--location-dir", default="/work/shared/datasets/location")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs per variant (alternating order, fine-tuning seed + 100·r); median seconds, mean ± std "
                         "test accuracy")
    ap.add_argument("--sigma", type=float, default=1.0)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    conf = _config()
    # the old strategy, registered for this process only so that prune_and_finetune can build it
    DEFENSES.register(OLD, label="DP-SGD (Opacus hooks, old)", family="dp", needs=("state",))(OpacusHooksDPSGD)
    result: dict = {
        "benchmark": "dp_speed",
        "what": f"victim fine-tuning on Location: {METHOD} to sparsity {SPARSITY}, {conf['pruning']['n_iter']} "
                f"iterations, up to {conf['pruning']['finetune']['epochs']} epochs (patience "
                f"{conf['pruning']['finetune']['patience']}); Base, the old Opacus-hooks DP-SGD and the new DP-SGD "
                f"from the same trained victim",
        "dp_settings": {"sigma": args.sigma, "clip": args.clip, "delta": args.delta},
        "device": str(device),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "seed": conf["seed"],
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "machine": platform.machine(), "cpu_count": os.cpu_count()},
    }
    t0 = time.perf_counter()
    ds_conf = conf["datasets"]["location"]
    raw = load_dataset("location", args.location_dir, download=False, **(ds_conf.get("loader") or {}))
    splits = make_splits(raw.labels, test_mask=raw.test_mask, seed=conf["seed"],
                         n_shadows=int(ds_conf["n_shadows"]), **conf["split"])
    role = role_data({"features": raw.features, "labels": raw.labels}, splits, "victim", device)
    tr = conf["training"]
    seed_everything(conf["seed"])
    victim = build_model(ds_conf["model"], tuple(raw.features.shape[1:]), raw.num_classes).to(device)
    tcfg = TrainConfig(epochs=int(tr["epochs"]), patience=int(tr["patience"]), batch_size=int(tr["batch_size"]),
                       lr=float(tr["lr"]), weight_decay=float(tr["weight_decay"]), device=str(device),
                       seed=conf["seed"], progress=False, desc="victim location")
    res = fit(victim, role.train, role.dev, tcfg)
    result["victim"] = {"train": int(role.train[0].shape[0]), "dev": int(role.dev[0].shape[0]),
                        "test": int(role.test[0].shape[0]), "epochs_run": res.epochs_run,
                        "seconds": round(res.seconds, 2), "test_acc": round(accuracy(victim, *role.test), 4)}
    print(f"location victim: {result['victim']}", flush=True)

    variants = _variants(args)
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.repeats):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for v in order:
            rec = _finetune(*variants[v], victim, role, conf, device, r)
            runs[v].append(rec)
            print(f"  [{r + 1}] {v:10s} {rec['seconds']:8.2f}s  {rec['steps']:5d} steps  {rec['ms_per_step']:7.2f} ms/step  "
                  f"test {rec['test_acc']:.4f}  eps {rec.get('epsilon', '-')}  load {rec['load_before']} -> "
                  f"{rec['load_after']}", flush=True)
    table = {}
    for v, recs in runs.items():
        out = dict(recs[0])
        out["seconds"] = round(statistics.median(x["seconds"] for x in recs), 3)
        out["ms_per_step"] = round(statistics.median(x["ms_per_step"] for x in recs), 3)
        out["seconds_all_runs"] = [x["seconds"] for x in recs]
        out["test_acc_all_runs"] = [x["test_acc"] for x in recs]
        out["test_acc_mean"] = round(statistics.fmean(out["test_acc_all_runs"]), 4)
        out["test_acc_std"] = round(statistics.stdev(out["test_acc_all_runs"]), 4) if len(recs) > 1 else 0.0
        if "epsilon" in out:
            out["epsilon_all_runs"] = [x["epsilon"] for x in recs]
        out["load_before_after_all_runs"] = [[x["load_before"], x["load_after"]] for x in recs]
        table[v] = out
    result["variants"] = table
    base = table["base"]
    result["dp_over_base_seconds"] = {v: round(table[v]["seconds"] / base["seconds"], 3) for v in ("dpsgd_old", "dpsgd")}
    result["dp_over_base_ms_per_step"] = {v: round(table[v]["ms_per_step"] / base["ms_per_step"], 3)
                                          for v in ("dpsgd_old", "dpsgd")}
    result["new_speedup_over_old"] = round(table["dpsgd_old"]["seconds"] / table["dpsgd"]["seconds"], 2)
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]

    print(f"\n{'variant':10s} {'seconds':>9s} {'× base':>7s} {'ms/step':>8s} {'test acc':>9s} {'epsilon':>8s}")
    for v, rec in table.items():
        ratio = rec["seconds"] / base["seconds"]
        print(f"{v:10s} {rec['seconds']:9.2f} {ratio:7.2f} {rec['ms_per_step']:8.2f} {rec['test_acc_mean']:9.4f} "
              f"{rec.get('epsilon', float('nan')):8.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
