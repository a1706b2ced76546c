"""Benchmark: training throughput on one CUDA GPU.

Measurements, each with the project's own code and device-resident data, under the project's
default torch settings (``deterministic: true``: deterministic kernels, no cuDNN autotuning):

* ``column_fc``: ColumnFC (446 -> 256 -> 128 -> 30) trained with ``train.fit`` (bf16 autocast,
  on-device batches) on Location -- the real archive when ``--location-dir`` holds
  ``dataset_location.tgz``, otherwise Location-shaped synthetic data (5010 rows, 446 binary
  features at Location's 12% density, 30 classes); samples/s at the project's batch 128 and at
  a larger batch;
* ``resnet18``: CIFAR ResNet18 trained with ``train.fit`` on CIFAR-shaped random uint8 images
  (3x32x32, 10 classes); samples/s at batch 128 and a larger batch;
* ``memscore``: models/s of the Feldman-Zhang estimator's stacked ensemble (``estimate_shard``,
  device cuda, the project's memscore settings: 20 epochs, r = 0.7, batch 128) on the Location
  train pool, against a plain loop of single models on the same GPU (``baseline_loop`` of
  ``benchmarks/reference/memscore_loop.py``), both
  with all epochs and, for the ensemble, also with its default convergence stop;
* ``resnet18_nondeterministic`` (not with ``--quick``): ResNet18 again with
  ``deterministic: false`` (torch's default kernels), i.e. what determinism costs.

Every training is preceded by an untimed warm-up (CUDA context, cuDNN/cuBLAS kernels), and
timed between ``torch.cuda.synchronize()`` calls. Results are written to ``--out`` after every
section, so a run cut short by a time limit keeps what it measured; sections that would start
after ``--budget-s`` seconds are skipped (and listed as skipped).

Sizes are chosen for about 1-2 minutes on one H200 (``--quick``: under a minute), well inside
5 minutes; not yet run on a GPU. Without CUDA it prints "CUDA not available: nothing measured"
and exits 0 without writing anything (``--cpu-dry-run`` runs every code path on the CPU with
tiny sizes, to check the script; it writes only to an explicit ``--out``).

    python benchmarks/gpu_throughput.py [--quick] [--out PATH] [--budget-s 270]
        [--location-dir /work/shared/datasets/location] [--sections a,b] [--nondeterministic]

(with the project installed, or from a bare checkout: ``src/`` is added to the path when
``wemem`` is not importable). Writes benchmarks/results/gpu_throughput.json (or ``--out``) and
prints a summary; exit status 1 when a section failed (the others are still written).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

try:
    import wemem  # noqa: F401 - installed in the project's .venv
except ImportError:  # a bare checkout on a GPU machine: import the package from src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make benchmarks.reference importable
    sys.path.insert(0, str(ROOT))

from benchmarks.reference.memscore_loop import baseline_loop  # noqa: E402
from wemem.ml import memorization as mz  # noqa: E402
from wemem.ml.data import load_dataset, make_splits  # noqa: E402
from wemem.ml.memorization.ensemble import chunk_size  # noqa: E402
from wemem.ml.models import build_model  # noqa: E402
from wemem.ml.train import TrainConfig, fit, resolve_device, to_tensors  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_throughput.json"
NO_CUDA = "CUDA not available: nothing measured"

# sizes: (full run, --quick, --cpu-dry-run)
SIZES = {
    "full": {"fc_epochs": 10, "fc_batches": [128, 1024], "rn_samples": 20000, "rn_epochs": 2,
             "rn_batches": [128, 512], "ms_m": 512, "ms_base_m": 16, "ms_epochs": 20},
    "quick": {"fc_epochs": 4, "fc_batches": [128, 1024], "rn_samples": 8192, "rn_epochs": 1,
              "rn_batches": [128, 512], "ms_m": 128, "ms_base_m": 4, "ms_epochs": 20},
    "dry": {"fc_epochs": 1, "fc_batches": [128, 512], "rn_samples": 64, "rn_epochs": 1,
            "rn_batches": [32], "ms_m": 4, "ms_base_m": 2, "ms_epochs": 2},
}


def set_deterministic(on: bool) -> None:
    """The torch settings of the project's ``deterministic`` parameter (as ``wemem.hooks.configure_torch``
    applies them before a run): true = deterministic kernels, no cuDNN autotuning; false = torch's
    defaults."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = on
    torch.use_deterministic_algorithms(on, warn_only=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def location_data(location_dir: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(all features, all labels, train-pool rows, source): the real archive or a synthetic twin."""
    if (Path(location_dir) / "dataset_location.tgz").is_file():
        ds = load_dataset("location", location_dir, download=False)
        pool = make_splits(ds.labels, test_mask=ds.test_mask, seed=0, n_shadows=1)["train_pool"]
        return ds.features, ds.labels, pool, f"real archive {location_dir}/dataset_location.tgz"
    n, d, k = 5010, 446, 30
    x = (rng.random((n, d)) < 0.12).astype(np.float32)
    y = rng.integers(0, k, n).astype(np.int64)
    y[:k] = np.arange(k)  # every class present
    pool = rng.permutation(n)[: int(0.8 * n)]
    return x, y, pool, "synthetic (5010 x 446 binary at density 0.12, 30 classes)"


def time_fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int,
             device: torch.device, desc: str) -> dict:
    """samples/s of ``train.fit`` (no dev set: every epoch trains, nothing is evaluated)."""
    warm = TrainConfig(epochs=1, batch_size=batch, patience=None, progress=False, desc=f"{desc} warm-up", seed=1)
    fit(model, (x[: max(batch * 4, 1)], y[: max(batch * 4, 1)]), None, warm)
    _sync(device)
    _reset_peak(device)
    cfg = TrainConfig(epochs=epochs, batch_size=batch, patience=None, progress=False, desc=desc, seed=2)
    t0 = time.perf_counter()
    res = fit(model, (x, y), None, cfg)
    _sync(device)
    seconds = time.perf_counter() - t0
    samples = int(x.shape[0]) * res.epochs_run
    return {"batch_size": batch, "epochs": res.epochs_run, "samples": samples, "seconds": round(seconds, 3),
            "samples_per_s": round(samples / seconds, 1), "steps_per_s": round(res.epochs_run * -(-x.shape[0] // batch) / seconds, 1),
            "peak_mem_mib": _peak_mib(device)}


def batch_sweep(name: str, make_model: Callable[[], torch.nn.Module], x: torch.Tensor, y: torch.Tensor,
                batches: list[int], epochs: int, device: torch.device) -> list[dict]:
    """``time_fit`` of a freshly built model (seed 0) at each batch size."""
    runs = []
    for batch in batches:
        torch.manual_seed(0)
        rec = time_fit(make_model().to(device), x, y, batch, epochs, device, f"{name} b{batch}")
        runs.append(rec)
        print(f"  {name:9s} batch {batch:5d}: {rec['samples_per_s']:>12,.0f} samples/s "
              f"({rec['steps_per_s']:,.0f} steps/s)", flush=True)
    return runs


def bench_column_fc(sz: dict, device: torch.device, location_dir: str, rng: np.random.Generator) -> dict:
    xs, ys, _, source = location_data(location_dir, rng)
    x, y = to_tensors(xs, ys, device)
    classes = int(ys.max() + 1)
    runs = batch_sweep("column_fc", lambda: build_model("column_fc", (x.shape[1],), classes),
                       x, y, sz["fc_batches"], sz["fc_epochs"], device)
    return {"data": source, "rows": int(x.shape[0]), "features": int(x.shape[1]), "classes": classes, "runs": runs}


def bench_resnet18(sz: dict, device: torch.device, rng: np.random.Generator) -> dict:
    n = sz["rn_samples"]
    xs = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    ys = rng.integers(0, 10, n).astype(np.int64)
    x, y = to_tensors(xs, ys, device)
    runs = batch_sweep(
        "resnet18", lambda: build_model("resnet18", (3, 32, 32), 10, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26)),
        x, y, sz["rn_batches"], sz["rn_epochs"], device)
    return {"data": f"random uint8 {n} x 3 x 32 x 32, 10 classes", "rows": n, "runs": runs}


def bench_resnet18_nondeterministic(sz: dict, device: torch.device, rng: np.random.Generator) -> dict:
    """ResNet18 again with the project's ``deterministic: false`` (torch's default kernels): what determinism costs."""
    before = torch.are_deterministic_algorithms_enabled()
    set_deterministic(False)
    try:
        out = bench_resnet18(sz, device, rng)
    finally:
        set_deterministic(before)
    out["deterministic"] = False
    return out


def _timed_memscore(fn, device: torch.device) -> tuple[mz.ShardStats, float]:
    _sync(device)
    t0 = time.perf_counter()
    stats = fn()
    _sync(device)
    return stats, time.perf_counter() - t0


def bench_memscore(sz: dict, device: torch.device, location_dir: str, rng: np.random.Generator) -> dict:
    xs, ys, pool, source = location_data(location_dir, rng)
    x, y = xs[pool], ys[pool]
    k = int(ys.max() + 1)
    cfg = mz.MemScoreSettings(m=sz["ms_m"], epochs=sz["ms_epochs"], subset_fraction=0.7, estimator="probability")
    run = dict(seed=0, device=str(device), progress=False, num_classes=k)  # the run values besides the model
    # warm-up of both code paths (kernels, fused Adam, generators)
    tiny = cfg.model_copy(update={"m": 2, "epochs": 1})
    mz.estimate_shard(x, y, [0, 1], tiny, arch="column_fc", **run)
    baseline_loop(x, y, tiny, **run)
    out: dict = {"data": f"Location train pool: {source}", "pool_rows": int(x.shape[0]), "epochs": cfg.epochs,
                 "subset_fraction": cfg.subset_fraction, "batch_size": cfg.batch_size,
                 "chunk_size": chunk_size(cfg, device, x.shape[1], cfg.m, (256, 128))}

    variants = [("ensemble_all_epochs", cfg.model_copy(update={"converge_acc": None})),
                ("ensemble_default", cfg)]
    for name, c in variants:
        _reset_peak(device)
        stats, sec = _timed_memscore(lambda c=c: mz.estimate_shard(x, y, list(range(c.m)), c, arch="column_fc", **run),
                                     device)
        out[name] = {"m": c.m, "seconds": round(sec, 2), "models_per_s": round(c.m / sec, 2),
                     "mean_epochs_run": round(float(np.mean(stats.epochs_run)), 2),
                     "converge_acc": c.converge_acc, "peak_mem_mib": _peak_mib(device)}
        print(f"  memscore {name:20s} m={c.m:4d}: {sec:7.2f}s, {c.m / sec:8.2f} models/s "
              f"(mean {out[name]['mean_epochs_run']} epochs)", flush=True)

    bcfg = cfg.model_copy(update={"m": sz["ms_base_m"]})
    _reset_peak(device)
    stats, sec = _timed_memscore(lambda: baseline_loop(x, y, bcfg, **run), device)
    out["baseline_loop"] = {"m": bcfg.m, "seconds": round(sec, 2), "models_per_s": round(bcfg.m / sec, 3),
                            "mean_epochs_run": round(float(np.mean(stats.epochs_run)), 2),
                            "peak_mem_mib": _peak_mib(device)}
    print(f"  memscore {'baseline_loop':20s} m={bcfg.m:4d}: {sec:7.2f}s, {bcfg.m / sec:8.3f} models/s", flush=True)
    base = out["baseline_loop"]["models_per_s"]
    out["speedup_all_epochs_vs_baseline"] = round(out["ensemble_all_epochs"]["models_per_s"] / base, 1)
    out["speedup_default_vs_baseline"] = round(out["ensemble_default"]["models_per_s"] / base, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (well under a minute on an H200)")
    ap.add_argument("--out", type=Path, default=None, help=f"results file (default {RESULTS})")
    ap.add_argument("--budget-s", type=float, default=270.0, help="skip sections that would start after this")
    ap.add_argument("--location-dir", default="/work/shared/datasets/location")
    ap.add_argument("--sections", default=None,
                    help="comma-separated subset of column_fc,resnet18,memscore,resnet18_nondeterministic "
                         "(default: all; the last one only without --quick)")
    ap.add_argument("--nondeterministic", action="store_true",
                    help="measure everything with the project's deterministic: false (torch's default kernels)")
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="check the script on a machine without CUDA (tiny sizes, CPU; needs --out)")
    args = ap.parse_args(argv)

    if args.cpu_dry_run:
        if args.out is None:
            ap.error("--cpu-dry-run writes only to an explicit --out (never to benchmarks/results)")
        device, mode = torch.device("cpu"), "dry"
    elif not torch.cuda.is_available():
        print(NO_CUDA, flush=True)
        return 0
    else:
        device, mode = resolve_device("cuda"), ("quick" if args.quick else "full")
    out_path = args.out or RESULTS
    sz = SIZES[mode]
    t_start = time.perf_counter()
    result: dict = {
        "benchmark": "gpu_throughput",
        "mode": mode,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "amp": "bf16 autocast" if device.type == "cuda" else "none (CPU dry run)",
        "deterministic": not args.nondeterministic,
        "sizes": sz,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "cuda": torch.version.cuda, "cpu_count": os.cpu_count(),
                        "load_average_start": [round(v, 2) for v in os.getloadavg()]},
        "sections": {},
        "skipped": [],
        "errors": {},
    }

    set_deterministic(not args.nondeterministic)

    def save() -> None:
        result["environment"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
        result["total_seconds"] = round(time.perf_counter() - t_start, 1)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2) + "\n")

    benches = {
        "column_fc": lambda rng: bench_column_fc(sz, device, args.location_dir, rng),
        "resnet18": lambda rng: bench_resnet18(sz, device, rng),
        "memscore": lambda rng: bench_memscore(sz, device, args.location_dir, rng),
        "resnet18_nondeterministic": lambda rng: bench_resnet18_nondeterministic(sz, device, rng),
    }
    sections = args.sections or ("column_fc,resnet18,memscore" + ("" if mode == "quick" else ",resnet18_nondeterministic"))
    for name in [s.strip() for s in sections.split(",") if s.strip()]:
        if name not in benches:
            ap.error(f"unknown section {name!r}; choose from {sorted(benches)}")
        elapsed = time.perf_counter() - t_start
        if elapsed > args.budget_s:
            print(f"{name}: skipped ({elapsed:.0f}s > budget {args.budget_s:.0f}s)", flush=True)
            result["skipped"].append(name)
            save()
            continue
        print(f"{name}:", flush=True)
        t0 = time.perf_counter()
        try:
            result["sections"][name] = benches[name](np.random.default_rng(0))
            result["sections"][name]["section_seconds"] = round(time.perf_counter() - t0, 1)
        except Exception as exc:  # noqa: BLE001 - keep the other sections' figures
            traceback.print_exc()
            result["errors"][name] = f"{type(exc).__name__}: {exc}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
        save()
    save()
    print(f"wrote {out_path} ({result['total_seconds']}s)", flush=True)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
