"""Failure isolation per combination: an exception while pruning, defending or attacking one
combination becomes that combination's ``failed`` record instead of ending the run.

The nodes of one combination call :func:`guarded`; what they return on failure flows down the
combination's own nodes like a result (a failed models payload, failed model outputs), so its
attack results say ``status: failed`` with the message, the reports show the row as failed, the
MLflow child run ends ``FAILED``, and :class:`wemem.hooks.FailureSummaryHook` ends the run with
a non-zero exit and one line naming every failed combination.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from wemem.ml.evaluation import FAILED

__all__ = ["DEBUG_ENV", "debug", "error_text", "failed_payloads", "failed_outputs", "outputs_error", "log_failure"]

log = logging.getLogger(__name__)

DEBUG_ENV = "WEMEM_DEBUG"


def debug() -> bool:
    """``WEMEM_DEBUG=1``: errors come with their traceback."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def error_text(exc: BaseException) -> str:
    """``Type: message`` on one line (a table cell, an MLflow tag, a log line)."""
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def log_failure(namespace: str, stage: str, exc: BaseException) -> str:
    """Logs one line (the traceback too with ``WEMEM_DEBUG=1``); returns ``stage: Type: message``."""
    error = f"{stage}: {error_text(exc)}"
    log.error("%s failed (%s); the other combinations go on", namespace, error, exc_info=exc if debug() else None)
    return error


def failed_payloads(meta: dict[str, Any], error: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``pruned_models`` and ``finetune_log`` of a combination that failed with ``error``."""
    meta = {**meta, "status": "failed", "error": error}
    return {"meta": meta, "models": {}}, {"meta": meta, "models": {}}


def failed_outputs(error: str) -> dict[str, np.ndarray]:
    """Model outputs that say the combination failed (and why) instead of holding outputs."""
    return {FAILED: np.array([1]), "error": np.array(error)}


def outputs_error(outputs: dict[str, np.ndarray]) -> str | None:
    """The error that :func:`failed_outputs` recorded, or None."""
    return str(outputs["error"]) if FAILED in outputs and "error" in outputs else None
