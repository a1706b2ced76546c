"""The plain loop of the Feldman–Zhang estimator: ``m`` models one after another with
``train.fit``, dense inputs, torch's Adam, every one for all ``settings.epochs`` epochs.

Not part of the library: it is the yardstick of ``benchmarks/memscore_speed.py`` and
``benchmarks/gpu_throughput.py``, and the tests check that the library's estimator draws the
same subsets. Model ``j`` trains exactly as in :func:`wemem.ml.memorization.estimator.train_single`
(subset, seed and hyper-parameters from ``(seed, j)`` and the settings).
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from wemem.ml.memorization import ESTIMATORS, MemScoreSettings, ShardStats
from wemem.ml.memorization.estimator import accumulate, empty_stats, train_single
from wemem.ml.train import resolve_device, to_tensors

__all__ = ["baseline_all", "baseline_loop"]


def baseline_all(features: np.ndarray, labels: np.ndarray, settings: MemScoreSettings, *, seed: int,
                 arch: str = "column_fc", device: str = "auto", progress: bool = True,
                 num_classes: int | None = None) -> dict[str, ShardStats]:
    """:func:`baseline_loop` for both estimators at once (the models are the same)."""
    start = time.perf_counter()
    dev = resolve_device(device)
    num_classes = int(num_classes or int(np.max(labels)) + 1)
    x, y = to_tensors(features, labels, dev)
    xf = x.float()
    stats = {e: empty_stats(x.shape[0]) for e in ESTIMATORS}
    epochs_run = []
    for j in tqdm(range(settings.m), desc="baseline models", disable=None if progress else True, leave=False):
        member, signals, epochs = train_single(xf, y, j, settings, arch=arch, seed=seed, num_classes=num_classes,
                                               arch_kwargs={})
        for e in ESTIMATORS:
            accumulate(stats[e], member, signals[e])
        epochs_run.append(epochs)
    seconds = time.perf_counter() - start
    for s in stats.values():
        s.model_ids, s.epochs_run, s.seconds = list(range(settings.m)), list(epochs_run), seconds
    return stats


def baseline_loop(features: np.ndarray, labels: np.ndarray, settings: MemScoreSettings, *, seed: int,
                  arch: str = "column_fc", device: str = "auto", progress: bool = True,
                  num_classes: int | None = None) -> ShardStats:
    """The ``settings.m`` models' in/out sums for ``settings.estimator``, one model at a time."""
    return baseline_all(features, labels, settings, seed=seed, arch=arch, device=device, progress=progress,
                        num_classes=num_classes)[settings.estimator]
