"""Project hooks."""

from __future__ import annotations

from kedro.framework.hooks import hook_impl

from wemem import structure


class StructureHook:
    """Hands the run's configuration to :mod:`wemem.structure` before pipelines are built."""

    @hook_impl
    def after_context_created(self, context) -> None:
        structure.set_config_loader(context.config_loader)
