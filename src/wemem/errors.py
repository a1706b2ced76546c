"""Errors of a run that one message explains (no traceback needed), and how the command line
turns any project error into that one message (:func:`explain`).

Project errors are: :class:`wemem.params.ParameterError` (bad parameter), the library's
:class:`wemem.ml.data.DataError` (bad data or raw file), :class:`wemem.ml.registry.UnknownName`,
a pydantic ``ValidationError`` (bad settings), Kedro's ``DatasetError`` (a missing, unreadable or
unwritable artefact: the project's datasets name the file and the fix), Kedro's unknown
pipeline / namespace errors (reworded here to list the valid names), a config file Kedro cannot
read, and :class:`RunError` (e.g. :class:`CombinationsFailed`). Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

__all__ = ["RunError", "CombinationsFailed", "explain"]


class RunError(Exception):
    """A problem of the run as a whole, fully described by its message."""


class CombinationsFailed(RunError):
    """Some combinations failed (their rows say why); the others finished and were reported."""

    def __init__(self, failed: Mapping[str, str], total: int) -> None:
        self.failed = dict(failed)
        listed = "; ".join(f"{ns} ({err})" for ns, err in self.failed.items())
        super().__init__(
            f"{len(self.failed)} of {total} combination(s) failed: {listed}. The other combinations finished; "
            "the reports show the failed rows with status 'failed' and their error.")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _valid_names(kind: str) -> str:
    """The registered pipeline names, or the namespaces of the default pipeline."""
    try:
        from kedro.framework.project import pipelines

        if kind == "pipeline":
            names = sorted(pipelines)
        else:
            spaces = {n.namespace for n in pipelines["__default__"].nodes if n.namespace}
            names = sorted(spaces | {s.split(".")[0] for s in spaces})
    except Exception:  # noqa: BLE001 - the registry itself is broken: say so plainly
        return "(could not list them)"
    return ", ".join(names)


def _reworded(exc: BaseException) -> str | None:
    """Kedro's messages about unknown pipelines and namespaces, with the valid names."""
    text = str(exc)
    m = re.search(r"Failed to find the pipeline named '([^']*)'", text)
    if m:
        return f"unknown pipeline {m.group(1)!r} (--pipelines); valid: {_valid_names('pipeline')}"
    m = re.search(r"does not contain nodes with the following namespaces: (.*)", text)
    if m:
        return f"unknown namespace(s) {m.group(1).strip()} (--namespaces); valid: {_valid_names('namespace')}"
    return None


def explain(exc: BaseException) -> str | None:
    """The one message for a project error anywhere in ``exc``'s chain (outermost first), or
    None for anything else (a bug, whose traceback is what helps)."""
    from kedro.config import MissingConfigException
    from kedro.io.core import DatasetError
    from pydantic import ValidationError

    from wemem.ml.data import DataError
    from wemem.ml.registry import UnknownName
    from wemem.params import ParameterError

    known = (RunError, ParameterError, DataError, UnknownName, ValidationError, DatasetError, MissingConfigException)
    for err in _chain(exc):
        reworded = _reworded(err) if isinstance(err, ValueError) else None
        if reworded:
            return reworded
        if isinstance(err, known):
            return str(err).strip()
    for err in _chain(exc):  # config files Kedro could not parse (YAML, OmegaConf interpolation)
        if type(err).__module__.split(".")[0] in ("omegaconf", "yaml"):
            return f"cannot read the configuration in conf/: {' '.join(str(err).split())}"
    return None
