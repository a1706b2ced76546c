"""Fixtures shared by the runner tests."""

from __future__ import annotations

import faulthandler

import pytest


@pytest.fixture(autouse=True)
def time_limit():
    """No test may hang: after 240 s the stacks are printed and the test process exits."""
    faulthandler.dump_traceback_later(240, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def one_thread():
    """Torch in this process with one thread, like each worker: same seed, same arithmetic."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
