"""Benchmark: the memscore shards with SequentialRunner, DaskRunner and ParallelRunner.

One process, one temporary copy of the project (``conf/base``; data under the copy), one
dataset ingestion, then the ``memscore`` pipeline (``--shards`` independent shard nodes, their
merge and the summary) once per runner, in this order:

* ``sequential_1_thread``: ``SequentialRunner`` with torch on 1 thread (the reference);
* ``dask``: ``wemem.runners.DaskRunner`` starting its own LocalCluster on 127.0.0.1
  (``--workers`` single-threaded worker processes; start and shutdown are included);
* ``parallel``: Kedro's ``ParallelRunner(max_workers=--workers)`` with spawned processes and
  ``OMP_NUM_THREADS=1``;
* ``sequential_2_threads``: ``SequentialRunner`` with torch on 2 threads (what a plain
  ``kedro run`` does on 2 cores).

Each timing is the wall time of ``session.run`` (catalog, runner, hooks). ``shards_at_once`` is
the shards' own training seconds summed, over that wall time: how many shards trained at once on
average (about 1 sequentially, up to ``--workers`` in parallel). The 1-minute load average is
recorded before and after each run: the machine may be shared, and a busy core slows every runner
(an OpenMP team of 2 threads most of all). Every run's memscores table is compared with the
reference run's for exact equality.

    python benchmarks/runner_speed.py [--dataset location] [--raw-dir /work/shared/datasets/location]
        [--m 32] [--epochs 20] [--shards 4] [--workers 2] [--out PATH]

Writes benchmarks/results/runner_speed.json and prints a summary.
"""

from __future__ import annotations

import os

# before torch is imported anywhere: spawned ParallelRunner workers read these at start
os.environ.update({"KEDRO_MP_CONTEXT": "spawn", "OMP_NUM_THREADS": "1", "DO_NOT_TRACK": "1",
                   "KEDRO_DISABLE_TELEMETRY": "1", "WEMEM_MLFLOW_DISABLE": "1"})

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "runner_speed.json"


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def make_project(root: Path) -> Path:
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(REPO / "conf" / "base", root / "conf" / "base")
    (root / "conf" / "local").mkdir()
    (root / "conf" / "local" / "mlflow.yml").write_text("enabled: false\n")
    (root / "src").mkdir()
    (root / ".telemetry").write_text("consent: false\n")
    return root


def run(project: Path, runner, pipeline: str, params: dict, threads: int) -> dict:
    import torch
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    torch.set_num_threads(threads)
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        load_before = _load()
        start = time.perf_counter()
        session.run(pipeline_names=[pipeline], runner=runner)
        seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "load_before": load_before, "load_after": _load()}


def outputs(project: Path, dataset: str, n_shards: int) -> tuple[pd.DataFrame, float]:
    """The newest memscores table and the shards' own training seconds, summed."""
    primary = project / "data" / "03_primary" / dataset
    versions = primary / "memscores.csv"
    table = pd.read_csv(sorted(versions.iterdir())[-1] / "memscores.csv")
    shard_seconds = 0.0
    for k in range(n_shards):
        with np.load(primary / "memscore_shards" / f"shard_{k}.npz") as z:
            shard_seconds += float(z["seconds"].ravel()[0])
    return table, round(shard_seconds, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="location")
    parser.add_argument("--raw-dir", default=str(REPO.parent / "shared" / "datasets" / "location"))
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args()

    from kedro.runner import ParallelRunner, SequentialRunner

    from wemem.runners import DaskRunner

    params = {
        "dataset": args.dataset,
        "data_ingestion": {"raw_dir": args.raw_dir, "download": False},
        "memscore": {"m": args.m, "epochs": args.epochs, "n_shards": args.shards},
        "progress": False,
    }

    runners = [
        ("sequential_1_thread", lambda: SequentialRunner(), 1),
        ("dask", lambda: DaskRunner(cluster_args={"n_workers": args.workers, "threads_per_worker": 1}), 1),
        ("parallel", lambda: ParallelRunner(max_workers=args.workers), 1),
        ("sequential_2_threads", lambda: SequentialRunner(), 2),
    ]
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="runner_speed_") as tmp:
        project = make_project(Path(tmp))
        ingest = run(project, SequentialRunner(), "data_ingestion", params, threads=1)
        reference = None
        for name, make_runner, threads in runners:
            runs[name] = run(project, make_runner(), "memscore", params, threads)
            table, runs[name]["shard_training_seconds_sum"] = outputs(project, args.dataset, args.shards)
            # mean number of shards training at once (1 for a sequential run)
            runs[name]["shards_at_once"] = round(runs[name]["shard_training_seconds_sum"] / runs[name]["seconds"], 2)
            if reference is None:
                reference = table
            runs[name]["memscores_identical_to_reference"] = bool(table.equals(reference))
            print(f"{name}: {runs[name]}", flush=True)

    base = runs["sequential_1_thread"]["seconds"]
    for r in runs.values():
        r["speedup_vs_sequential_1_thread"] = round(base / r["seconds"], 2)
        r["speedup_vs_sequential_2_threads"] = round(runs["sequential_2_threads"]["seconds"] / r["seconds"], 2)
    result = {
        "what": f"memscore pipeline ({args.shards} shard nodes, merge, summary), wall time of session.run",
        "dataset": args.dataset,
        "memscore": params["memscore"],
        "workers": args.workers,
        "cores": os.cpu_count(),
        "data_ingestion": ingest,
        "runs": runs,
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\nmemscore on {args.dataset}: m={args.m}, {args.epochs} epochs, {args.shards} shards; "
          f"{os.cpu_count()} cores, {args.workers} workers")
    print(f"{'runner':22s} {'wall s':>7s} {'speed-up':>9s} {'shard s':>8s} {'at once':>8s} {'load':>11s}  same scores")
    for name, r in runs.items():
        print(f"{name:22s} {r['seconds']:7.1f} {r['speedup_vs_sequential_1_thread']:8.2f}x "
              f"{r['shard_training_seconds_sum']:8.1f} {r['shards_at_once']:8.2f} "
              f"{r['load_before']:5.2f}-{r['load_after']:<5.2f}  {r['memscores_identical_to_reference']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
