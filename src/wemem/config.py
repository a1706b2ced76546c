"""How the project reads ``conf/``: one place for the config loader's arguments, used by
Kedro (through :mod:`wemem.settings`) and by :mod:`wemem.structure` outside a session."""

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
