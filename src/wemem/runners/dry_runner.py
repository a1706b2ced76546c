"""``DryRunner``: everything ``kedro run`` does before the first node, and no node.

``kedro run ... --runner=wemem.runners.DryRunner`` parses the command, loads and validates the
configuration (parameters, files named by settings, combinations: the project's
``ValidationHook``), builds the pipelines, applies ``--pipelines``/``--namespaces``/
``--only-missing-outputs`` and checks that every input of the selected nodes is in the catalog;
then it lists the nodes it would run and stops. The README test runs every ``kedro run`` command
of the README this way, so the README cannot drift from the code.
"""

from __future__ import annotations

import logging
from typing import Any

from kedro.runner import SequentialRunner

__all__ = ["DryRunner"]

log = logging.getLogger(__name__)


class DryRunner(SequentialRunner):
    """A runner that runs no node. Accepts (and ignores) any ``--runner-params``, so a command
    written for another runner can be checked by swapping the runner only."""

    def __init__(self, is_async: bool = False, **ignored: Any) -> None:
        super().__init__(is_async=is_async)

    def _run(self, pipeline, catalog, hook_manager=None, run_id: str | None = None) -> None:
        nodes = [n.name for n in pipeline.nodes]
        log.info("dry run: %d node(s) would run: %s", len(nodes), ", ".join(nodes) if nodes else "none")
