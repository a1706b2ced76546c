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
