"""Helpers of the browser test: a small MLflow store logged the way a run logs it, and an
``mlflow server`` on a free port serving it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_store(root: Path, results: list[dict[str, Any]], reports: dict[str, Any]) -> dict[str, str]:
    """An MLflow SQLite store under ``root`` holding one parent run with a child per result and
    the reports as artifacts, logged by the project's hook; returns its uri and ids."""
    from mlflow.tracking import MlflowClient

    from wemem.tracking import MlflowTrackingHook

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("wemem", artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(exp_id, run_name="mnist1d · __default__ · browser-test").info.run_id
    hook = MlflowTrackingHook()
    hook.settings = {"timeout_s": 120}
    hook.client, hook.exp_id, hook.parent_id, hook.seed = client, exp_id, parent, 0
    hook.catalog = SimpleNamespace(get=lambda name: SimpleNamespace(members=dict.fromkeys(reports)))
    for result in results:
        hook._log_child(result)
    hook._log_artifact("reports", reports)
    client.set_terminated(parent, "FINISHED")
    return {"uri": uri, "experiment_id": exp_id, "parent_id": parent}


@contextlib.contextmanager
def mlflow_server(uri: str, cwd: Path, timeout: float = 180.0) -> Iterator[str]:
    """``mlflow server`` of ``uri`` on a free local port; yields its base URL."""
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    log = open(cwd / "mlflow_server.log", "w")
    proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(cwd / 'mlflow_server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
