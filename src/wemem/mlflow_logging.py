"""What the MLflow hook (:mod:`wemem.tracking`) logs beyond one child run: a report value as
the parent's artifact, and the summary runs over repeats. ``call`` is the hook's bounded call
(every store call waits at most ``mlflow.timeout_s``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from wemem.ml.results import summary_metrics, summary_run_name

__all__ = ["log_value", "log_summaries"]


def log_value(call: Callable[..., Any], client: Any, run_id: str, name: str, value: Any) -> None:
    """One report value as an artifact of ``run_id``: a figure as PNG (saved tight, nothing
    clipped), an HTML page as ``.html``, other text as ``.md``, a table as CSV, a dict as JSON."""
    from matplotlib.figure import Figure

    if isinstance(value, Figure):
        call(client.log_figure, run_id, value, f"{name}.png", save_kwargs={"bbox_inches": "tight"})
    elif isinstance(value, str) and value.lstrip().lower().startswith("<!doctype html"):
        call(client.log_text, run_id, value, f"{name}.html")
    elif isinstance(value, str):
        call(client.log_text, run_id, value, f"{name}.md")
    elif hasattr(value, "to_csv"):
        call(client.log_text, run_id, value.to_csv(index=False), f"{name}.csv")
    elif isinstance(value, dict):
        call(client.log_dict, run_id, value, f"{name}.json")


def log_summaries(call: Callable[..., Any], client: Any, exp_id: str, parent_id: str,
                  results: list[dict[str, Any]]) -> None:
    """With several seeds among ``results``, one summary run per combination under the parent
    (tag ``wemem.summary=true``; metrics of :func:`wemem.ml.results.summary_metrics`)."""
    from mlflow.entities import Metric, Param

    if len({r.get("seed") for r in results}) < 2:
        return
    now = int(time.time() * 1000)
    first = {r["namespace"]: r for r in results}
    for ns, (params, metrics) in summary_metrics(results).items():
        tags = {"mlflow.parentRunId": parent_id, "wemem.namespace": ns, "wemem.summary": "true"}
        name = summary_run_name(first[ns], int(metrics.get("n_seeds", 0)))
        rid = call(client.create_run, exp_id, run_name=name, tags=tags).info.run_id
        call(client.log_batch, rid, params=[Param(k, v) for k, v in params.items()])
        entries = [Metric(k, v, now, 0) for k, v in metrics.items()]
        for i in range(0, len(entries), 1000):  # MLflow takes at most 1000 metrics per batch
            call(client.log_batch, rid, metrics=entries[i:i + 1000])
        call(client.set_terminated, rid, "FINISHED")
