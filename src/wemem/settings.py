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

from wemem.hooks import MlflowTrackingHook, ReportLocationHook, StructureHook

HOOKS = (StructureHook(), MlflowTrackingHook(), ReportLocationHook())

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # an environment such as conf/paper overrides single nested keys, not whole sections
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "mlflow": ["mlflow*", "mlflow*/**"],
    },
}
