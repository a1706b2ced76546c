"""Project settings (Kedro defaults where not set)."""

import warnings

# torch is imported here, in the main thread, before any runner starts helper threads or
# processes: a lazy import of torch from several threads at once fails intermittently
# (ParallelRunner, Dask workers) with a partially initialised module.
import torch  # noqa: F401

# kedro 1.7's config loader calls omegaconf's deprecated register_new_resolver() several times per
# run, each printing a 5-line UserWarning before the first log line; it is kedro's to migrate,
# and nothing a user of this project can act on.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)

from wemem.config import CONFIG_LOADER_ARGS  # noqa: E402,F401
from wemem.config import ConfigLoader as CONFIG_LOADER_CLASS  # noqa: E402,F401  (sweeps expanded)
from wemem.hooks import (  # noqa: E402
    FailureSummaryHook,
    GraphHook,
    MlflowTrackingHook,
    ReportLocationHook,
    TorchSetupHook,
    ValidationHook,
)

# order matters: parameters are checked before anything uses them; after a run, MLflow closes its
# parent run first (tryfirst), then the closing summary, then the failure summary (trylast)
HOOKS = (ValidationHook(), TorchSetupHook(), GraphHook(), MlflowTrackingHook(), ReportLocationHook(),
         FailureSummaryHook())
