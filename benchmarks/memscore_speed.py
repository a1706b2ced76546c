"""Benchmark: the Feldman–Zhang estimator (``estimate_shard``) against a plain loop (SPEC §4).

Both run in this one process, on the same Location train pool (SPEC §2 split, seed 0: 4008 rows x
446 binary features, 30 classes), with the same ``m`` models, the same subsets (``subset_mask``
depends only on (seed, model id)), the same hyper-parameters and the same torch thread count:

* baseline: ``baseline_loop`` (``benchmarks/reference/memscore_loop.py``) -- ``m`` ColumnFC models,
  one after another, with ``train.fit``
  (dense inputs, torch's Adam), every one for all ``--epochs``;
* ours: ``estimate_shard`` with its default settings (see ``wemem.ml.memorization``: stacked
  ensemble, fused Adam, 16-bit dropout draws, sparse first layer, convergence stop).

The two are timed alternately (baseline first in odd repeats, ours first in even ones) and the
1-minute load average is recorded around every timing, because the machine may be shared: a
busy core slows an OpenMP team of 2 threads many times over, so check ``uptime`` and prefer a
quiet machine (or ``--threads 1``). Agreement: Spearman rank correlation between the two raw
score vectors, for the correctness estimator and for the probability estimator (both come from
the same trained models). ``--ablation`` also times ours with the tricks added one by one.
On CUDA the stacked ensemble (and, with ``--cuda-baseline``, the loop) also runs on the GPU.

    python benchmarks/memscore_speed.py [--m 64] [--epochs 30] [--threads 2] [--repeats 1]
        [--dataset-path /work/shared/datasets/location] [--ablation] [--cuda-baseline]

Writes benchmarks/results/memscore_speed.json and prints a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from wemem.ml import memorization as mz
from wemem.ml.data import load_dataset, make_splits
from wemem.ml.memorization import ensemble

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make benchmarks.reference importable
    sys.path.insert(0, str(ROOT))
from benchmarks.reference.memscore_loop import baseline_all  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "memscore_speed.json"
TRICKS = [
    "stacked ensemble (batched matmuls, one Python step for a chunk of models)",
    "fused Adam (one pass over the stacked parameters per step)",
    "16-bit dropout draws (four uniforms per 64-bit random number)",
    "sparse first layer (embedding-bag sums over active features, forward and weight gradient)",
    "convergence stop (eval-mode accuracy on 512 subset rows >= 0.99, checked every 2 epochs)",
]


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _raw(stats: mz.ShardStats) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return stats.in_sum / stats.in_count - stats.out_sum / stats.out_count


def _spearman(a: mz.ShardStats, b: mz.ShardStats) -> float:
    ra, rb = _raw(a), _raw(b)
    ok = np.isfinite(ra) & np.isfinite(rb)
    return round(float(spearmanr(ra[ok], rb[ok]).statistic), 4)


def _distribution(stats: mz.ShardStats, labels: np.ndarray) -> dict:
    table = mz.scores_table(stats, labels)
    s = table["score"].to_numpy()
    return {"median_score": round(float(np.median(s)), 4), "frac_score_0": round(float((s == 0).mean()), 4),
            "frac_score_ge_0.6": round(float((s >= 0.6).mean()), 4),
            "samples_without_estimate": int((~np.isfinite(table["raw_score"])).sum())}


@contextlib.contextmanager
def _without_tricks(adam: bool, dropout: bool):
    """Ablation only: torch's per-tensor (unfused) Adam and/or ``torch.rand`` dropout masks."""
    saved = ensemble.StackedMLP._adam, ensemble.dropout_masks
    if adam:
        ensemble.StackedMLP._adam = lambda self, params: torch.optim.Adam(  # type: ignore[method-assign]
            params, lr=self.lr, weight_decay=self.weight_decay, foreach=False)
    if dropout:
        def float_masks(gens, batch, hidden, p, device):
            keep = torch.stack([(torch.rand(batch, sum(hidden), generator=g, device=device) >= p) for g in gens])
            return list(torch.split(keep.float() / (1 - p), list(hidden), dim=2))
        ensemble.dropout_masks = float_masks
    try:
        yield
    finally:
        ensemble.StackedMLP._adam, ensemble.dropout_masks = saved


def _timed(fn, *args) -> tuple[dict[str, mz.ShardStats], dict]:
    load_before = _load()
    t0 = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t0
    return out, {"seconds": round(seconds, 2), "load_before": load_before, "load_after": _load()}


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--subset-fraction", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset-path", default="/work/shared/datasets/location")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=1, help="alternating timings of baseline and ours")
    ap.add_argument("--device", default="cpu", help="device of the CPU comparison (cpu)")
    ap.add_argument("--ablation", action="store_true", help="also time ours with tricks switched off")
    ap.add_argument("--cuda-baseline", action="store_true", help="on CUDA, also time the loop on the GPU")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    ds = load_dataset("location", args.dataset_path, download=False)
    pool = make_splits(ds.labels, test_mask=ds.test_mask, seed=0, n_shadows=1)["train_pool"]
    x, y = ds.features[pool], ds.labels[pool]
    cfg = mz.MemScoreSettings(m=args.m, epochs=args.epochs, subset_fraction=args.subset_fraction)
    ids = list(range(cfg.m))
    run = dict(seed=args.seed, progress=False, num_classes=ds.num_classes)  # the run values besides the device

    def ours_fn(c: mz.MemScoreSettings, device: str = args.device) -> dict[str, mz.ShardStats]:
        return mz.estimate_all(x, y, ids, c, arch="column_fc", device=device, **run)

    def base_fn(c: mz.MemScoreSettings, device: str = args.device) -> dict[str, mz.ShardStats]:
        return baseline_all(x, y, c, device=device, **run)

    # warm-up: one-time costs (imports inside torch.optim, allocator) are paid before timing
    tiny = cfg.model_copy(update={"m": 2, "epochs": 1})
    ours_fn(tiny), base_fn(tiny)

    runs: dict[str, list[dict]] = {"baseline": [], "ours": []}
    stats: dict[str, dict[str, mz.ShardStats]] = {}
    for r in range(args.repeats):
        order = ["baseline", "ours"] if r % 2 == 0 else ["ours", "baseline"]
        for name in order:
            out, rec = _timed(base_fn if name == "baseline" else ours_fn, cfg)
            stats.setdefault(name, out)
            runs[name].append(rec)
            print(f"repeat {r + 1}: {name:8s} {rec['seconds']:7.1f}s  (load {rec['load_before']} -> {rec['load_after']})",
                  flush=True)
    base_s = statistics.median(rec["seconds"] for rec in runs["baseline"])
    ours_s = statistics.median(rec["seconds"] for rec in runs["ours"])
    epochs_run = stats["ours"]["correctness"].epochs_run
    result: dict = {
        "benchmark": "memscore_speed",
        "dataset": "location",
        "pool_rows": int(x.shape[0]),
        "features": int(x.shape[1]),
        "input_density": round(float((x != 0).mean()), 4),
        "m": cfg.m,
        "r": cfg.subset_fraction,
        "epochs": cfg.epochs,
        "seed": args.seed,
        "device": args.device,
        "threads": threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "load_average_start_end": [runs["baseline"][0]["load_before"], _load()],
        "tricks": TRICKS,
        "settings": {k: getattr(cfg, k) for k in ("models_per_chunk", "first_layer", "sparse_threshold",
                                                  "converge_acc", "converge_every", "converge_check_rows")},
        "baseline": {"seconds": base_s, "models_per_s": round(cfg.m / base_s, 3), "runs": runs["baseline"],
                     **_distribution(stats["baseline"]["correctness"], y)},
        "ours": {"seconds": ours_s, "models_per_s": round(cfg.m / ours_s, 3), "runs": runs["ours"],
                 "mean_epochs_run": round(float(np.mean(epochs_run)), 2),
                 "epochs_run_min_max": [int(min(epochs_run)), int(max(epochs_run))],
                 **_distribution(stats["ours"]["correctness"], y)},
        "speedup": round(base_s / ours_s, 2),
        "spearman_raw_scores": {e: _spearman(stats["baseline"][e], stats["ours"][e]) for e in mz.ESTIMATORS},
    }
    print(f"m={cfg.m} r={cfg.subset_fraction} epochs={cfg.epochs} threads={threads}: baseline {base_s:.1f}s, "
          f"ours {ours_s:.1f}s (mean {result['ours']['mean_epochs_run']} epochs) -> speed-up "
          f"{result['speedup']}x; Spearman {result['spearman_raw_scores']}", flush=True)

    if args.ablation:
        variants = [
            ("stacked dense, unfused Adam, float dropout, all epochs", dict(first_layer="dense", converge_acc=None), True),
            ("+ fused Adam", dict(first_layer="dense", converge_acc=None), "dropout"),
            ("+ 16-bit dropout draws", dict(first_layer="dense", converge_acc=None), False),
            ("+ sparse first layer", dict(first_layer="sparse", converge_acc=None), False),
            ("+ convergence stop (= ours)", dict(first_layer="sparse"), False),
            ("ours without the sparse first layer", dict(first_layer="dense"), False),
        ]
        result["ablation"] = {}
        for name, kw, undo in variants:
            with _without_tricks(adam=undo is True, dropout=bool(undo)):
                out, rec = _timed(ours_fn, cfg.model_copy(update=kw))
            rec.update(speedup_vs_baseline=round(base_s / rec["seconds"], 2),
                       mean_epochs_run=round(float(np.mean(out["correctness"].epochs_run)), 2),
                       spearman_raw_scores={e: _spearman(stats["baseline"][e], out[e]) for e in mz.ESTIMATORS})
            result["ablation"][name] = rec
            print(f"ablation: {name:56s} {rec['seconds']:7.1f}s  x{rec['speedup_vs_baseline']}  "
                  f"Spearman {rec['spearman_raw_scores']}", flush=True)

    if torch.cuda.is_available():
        ours_fn(tiny, "cuda")
        torch.cuda.synchronize()
        out, rec = _timed(ours_fn, cfg, "cuda")
        rec.update(gpu=torch.cuda.get_device_name(), models_per_s=round(cfg.m / rec["seconds"], 3),
                   chunk=ensemble.chunk_size(cfg, torch.device("cuda"), x.shape[1], cfg.m, (256, 128)),
                   mean_epochs_run=round(float(np.mean(out["correctness"].epochs_run)), 2),
                   spearman_vs_cpu_baseline={e: _spearman(stats["baseline"][e], out[e]) for e in mz.ESTIMATORS})
        if args.cuda_baseline:
            bout, brec = _timed(base_fn, cfg, "cuda")
            rec["baseline_seconds"] = brec["seconds"]
            rec["speedup_vs_cuda_baseline"] = round(brec["seconds"] / rec["seconds"], 2)
        result["cuda_stacked"] = rec
        print(f"cuda stacked ensemble: {rec['seconds']:.1f}s ({rec['models_per_s']} models/s)", flush=True)
    else:
        result["cuda_stacked"] = None

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
