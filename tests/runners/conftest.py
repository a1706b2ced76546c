"""Fixtures shared by the runner tests."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items):
    """No runner test may hang: each fails on its own after 600 s (pytest-timeout, signal method,
    so the rest of the suite still runs), sized for a loaded 2-core CI machine."""
    for item in items:
        if "runners" in item.nodeid and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(600))


@pytest.fixture(scope="module")
def one_thread():
    """Torch in this process with one thread, like each worker: same seed, same arithmetic."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ENV = {
    "DO_NOT_TRACK": "1", "KEDRO_DISABLE_TELEMETRY": "1", "WEMEM_MLFLOW_DISABLE": "1",
    "KEDRO_MP_CONTEXT": "spawn",  # fork after torch has used threads can hang a worker
    "OMP_NUM_THREADS": "1",       # read by torch in each spawned worker: 2 workers x 1 thread
}


@pytest.fixture(scope="module")
def env():
    """The environment of a process-based runner test (spawned workers, one thread each, no
    telemetry or MLflow)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ENV.items():
            mp.setenv(key, value)
        yield
