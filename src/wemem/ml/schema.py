"""Value types for settings schemas (pydantic v2), shared by every settings model.

Each type validates one value and, when it fails, raises an error that carries *why*
(``reason``) and *what is allowed* (``allowed``), e.g. ``out of range`` / ``a number in [0, 1)``.
:func:`wemem.params.validate_parameters` turns these into one line per problem with the
parameter's path. A schema is a :class:`Section` (unknown keys are errors); each defense and
each attack declares its own next to its class.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

__all__ = [
    "Section", "fail", "closest", "number", "choice", "Int", "PosInt", "NonNeg", "Pos", "Unit", "Fraction",
    "Sparsity", "Device", "first_error",
]


class Section(BaseModel):
    """A settings model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain values (for MLflow params, the table's settings column, JSON)."""
        return self.model_dump(mode="json")


def fail(reason: str, allowed: str, match: str | None = None) -> PydanticCustomError:
    """The error a value type raises: the message is the reason; ``allowed`` and ``match`` ride along."""
    return PydanticCustomError("wemem", "{reason}; allowed: {allowed}",
                               {"reason": reason, "allowed": allowed, "match": match})


def closest(value: Any, names: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(str(value), [str(n) for n in names], n=1, cutoff=0.6)
    return found[0] if found else None


def number(kind: type, lo: float | None = None, hi: float | None = None, *, lo_open=False, hi_open=False) -> Any:
    """An int or float inside a range; the error names the range, e.g. ``a number in [0, 1)``."""
    noun = "an integer" if kind is int else "a number"
    if lo is not None and hi is not None:
        allowed = f"{noun} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        allowed = f"{noun} {'>' if lo_open else '>='} {lo:g}"
    else:
        allowed = noun

    def check(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise fail(f"not {noun}", allowed)
        if kind is int and not float(v).is_integer():
            raise fail("not an integer", allowed)
        below = lo is not None and (v <= lo if lo_open else v < lo)
        above = hi is not None and (v >= hi if hi_open else v > hi)
        if below or above:
            raise fail("out of range", allowed)
        return kind(v)

    check.allowed = allowed
    return Annotated[kind, BeforeValidator(check)]


def choice(what: str, names: Iterable[str], normalise: Callable[[str], str] = lambda v: v) -> Any:
    """A string from ``names`` (a registry or a tuple); the error lists them and the closest match.

    ``names`` is read at validation time, so entries registered later count.
    """

    def check(v: Any) -> str:
        key = normalise(v) if isinstance(v, str) else v
        if key not in names:
            raise fail(f"unknown {what}", str(list(names)), closest(v, names))
        return key

    check.allowed = f"one of {list(names)}"
    return Annotated[str, BeforeValidator(check)]


def _device(v: Any) -> str:
    if not (isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v)):
        raise fail("not a torch device", _device.allowed)
    return v


_device.allowed = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"

Int = number(int)
PosInt = number(int, 1)
NonNeg = number(float, 0)
Pos = number(float, 0, lo_open=True)
Unit = number(float, 0, 1)                                  # [0, 1]
Fraction = number(float, 0, 1, lo_open=True, hi_open=True)  # (0, 1)
Sparsity = number(float, 0, 1, hi_open=True)                # [0, 1)
Device = Annotated[str, BeforeValidator(_device)]


def first_error(exc: Exception) -> str:
    """One line for a pydantic ValidationError (``key = value: reason; allowed: …``)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    lines = []
    for err in errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{key} = {err.get('input')!r}: unknown setting")
        elif err["type"] == "missing":
            lines.append(f"{key}: missing")
        else:
            lines.append(f"{key} = {err.get('input')!r}: {err['msg']}")
    return "; ".join(lines)
