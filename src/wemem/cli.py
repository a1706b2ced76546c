"""The project's command line: Kedro's commands, with ``kedro run`` ending in one clear message.

A project error (a bad parameter, bad data, a missing or unreadable file, an unknown pipeline or
namespace, failed combinations; see :func:`wemem.errors.explain`) prints one message on stderr,
``Error: ...``, and the command exits with status 1, without a traceback. ``WEMEM_DEBUG=1``
shows the full traceback instead; any other exception (a bug) always shows it.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run

from wemem.errors import explain
from wemem.pipelines.isolation import DEBUG_ENV, debug

__all__ = ["cli", "run"]


@click.group(name="wemem")
def cli() -> None:
    """Project commands of WeMem (Kedro's, with one-line errors)."""


def _run(*args: Any, **kwargs: Any) -> Any:
    try:
        return kedro_run.callback(*args, **kwargs)
    except click.ClickException:
        raise
    except Exception as exc:  # noqa: BLE001 - sorted into project errors and bugs below
        message = None if debug() else explain(exc)
        if message is None:
            raise
        click.secho(f"Error: {message} (set {DEBUG_ENV}=1 for the traceback)", err=True, fg="red")
        sys.exit(1)


run = copy.copy(kedro_run)
run.callback = _run
run.help = (kedro_run.help or "") + f"\n\nProject errors print one message; {DEBUG_ENV}=1 prints the traceback too."
cli.add_command(run, "run")
