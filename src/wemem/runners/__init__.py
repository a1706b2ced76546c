"""Project runners: ``kedro run --runner=wemem.runners.DaskRunner`` (see ``docs/scaling.md``)."""

from wemem.runners.dask_runner import DaskRunner

__all__ = ["DaskRunner"]
