"""Project runners: ``kedro run --runner=wemem.runners.DaskRunner`` (see ``docs/scaling.md``) and
``--runner=wemem.runners.DryRunner`` (validate a command, run no node)."""

from wemem.runners.dask_runner import DaskRunner
from wemem.runners.dry_runner import DryRunner

__all__ = ["DaskRunner", "DryRunner"]
