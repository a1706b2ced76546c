"""How the project reads ``conf/``: one place for the config loader's arguments, used by
Kedro (through :mod:`wemem.settings`) and by :mod:`wemem.structure` outside a session."""

from kedro.config import OmegaConfigLoader

from wemem.ml.sweeps import expand as expand_sweeps

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # an environment such as conf/paper overrides single nested keys, not whole sections
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "mlflow": ["mlflow*", "mlflow*/**"],
        "runner": ["runner*", "runner*/**"],
    },
}

class ConfigLoader(OmegaConfigLoader):
    """Kedro's OmegaConfigLoader whose ``parameters`` have the sweeps expanded
    (:func:`wemem.ml.sweeps.expand`: one ``defenses:`` variant per sweep point, the enabled
    sweeps' variants appended to ``pruning_defense.grid.defenses``), after ``--env`` and
    ``--params`` were applied."""

    def __getitem__(self, key: str):
        config = super().__getitem__(key)
        if key == "parameters" and isinstance(config, dict) and config.get("sweeps"):
            config = expand_sweeps(config)
        return config


_read: dict[str, tuple[object, object]] = {}


def read(loader, key: str):
    """``loader[key]`` (``--env`` and ``--params`` applied), read once per config loader and key.

    A config loader re-reads and re-resolves its files on every access (~70 ms for the
    parameters); the project's hooks and :mod:`wemem.structure` all ask the run's loader, so
    they share one read. The result is shared: callers must not change it.
    """
    cached = _read.get(key)
    if cached is None or cached[0] is not loader:
        cached = _read[key] = (loader, loader[key])
    return cached[1]
