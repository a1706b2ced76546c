"""Repeats under Kedro's ParallelRunner: the seeded nodes of two repeats (SeededNode functions)
pickle into spawned workers and give exactly what SequentialRunner gives, per seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from kedro.runner import ParallelRunner, SequentialRunner

from tests.runners import TINY, latest, make_project, run_project

SEEDS = [3, 4]
PARAMS = {**TINY, "repeats": {"seeds": SEEDS}}


def _memscores(project: Path, seed: int) -> pd.DataFrame:
    return pd.read_csv(latest(project / "data" / "03_primary" / "mnist1d" / f"seed{seed}" / "memscores.csv"))


def test_parallel_runner_runs_the_repeats_like_sequential(env, one_thread, tmp_path):
    sequential = make_project(tmp_path / "seq")
    run_project(sequential, SequentialRunner(), runtime_params=PARAMS)
    parallel = make_project(tmp_path / "par")
    outputs = run_project(parallel, ParallelRunner(max_workers=2), runtime_params=PARAMS)
    assert set(outputs) == {f"seed{s}.{name}" for s in SEEDS
                            for name in ("split_sizes", "memscore_summary", "memscore_distribution_plot")}
    for seed in SEEDS:
        pd.testing.assert_frame_equal(_memscores(sequential, seed), _memscores(parallel, seed), check_exact=True)
    # two seeds, two different estimates
    assert not np.array_equal(_memscores(parallel, SEEDS[0])["score"], _memscores(parallel, SEEDS[1])["score"])
