"""One registry per concept: dataset, model, pruning method, defense, attack.

A registry maps a name to an :class:`Entry`: the object that implements it (a class or a
function), a human label for tables and plots, a family (how reports group it), the settings
schema it takes (a pydantic model, see :mod:`wemem.ml.schema`) and what it needs from the run
(e.g. ``"scores"``: the memorisation scores of the model's training set).

Everything that lists names (parameter validation, the grid, the comparison table, MLflow)
reads the registry, so adding a defense or an attack is one module that registers itself plus
its ``conf/`` entry::

    @DEFENSES.register("mydef", label="MyDef", family="regulariser")
    class MyDefense(Base):
        class Settings(Base.Settings):
            strength: NonNeg = 1.0
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Entry", "Registry", "UnknownName"]


class UnknownName(ValueError):
    """A name that no entry of a registry has; the message lists the names and the closest one."""


@dataclass(frozen=True)
class Entry:
    """One registered name."""

    name: str
    obj: Any
    label: str
    family: str = ""
    settings: type | None = None  # pydantic model of the settings it takes (None: takes none)
    needs: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def parse(self, values: Mapping[str, Any] | Any | None = None) -> Any:
        """``values`` (a mapping, or already a settings instance) validated by the settings schema."""
        if self.settings is None:
            if values:
                raise ValueError(f"{self.name} takes no settings; got {dict(values)}")
            return None
        if isinstance(values, self.settings):
            return values
        return self.settings.model_validate(dict(values or {}))


class Registry(Mapping[str, Entry]):
    """``name → Entry`` for one concept; ``registry[name]`` raises :class:`UnknownName`."""

    def __init__(self, concept: str) -> None:
        self.concept = concept
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        *,
        label: str | None = None,
        family: str = "",
        settings: type | None = None,
        needs: tuple[str, ...] = (),
        **extra: Any,
    ) -> Callable[[Any], Any]:
        """Decorator: registers the decorated class or function under ``name``.

        A class's nested ``Settings`` model is its schema unless ``settings`` is given.
        """

        def deco(obj: Any) -> Any:
            schema = settings if settings is not None else getattr(obj, "Settings", None)
            self.add(Entry(name, obj, label or name, family, schema, tuple(needs), dict(extra)))
            return obj

        return deco

    def add(self, entry: Entry) -> None:
        self._entries[entry.name] = entry

    def remove(self, name: str) -> None:
        """Drops ``name`` (tests register toy entries and take them out again)."""
        self._entries.pop(name, None)

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(self.unknown_message(name)) from None

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:  # an unhashable value (e.g. a list in a typo'd parameter)
            return False

    def get(self, name: str, default: Any = None) -> Entry | Any:
        return self._entries.get(name, default) if name in self else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.concept!r}, {list(self._entries)})"

    def closest(self, name: Any) -> str | None:
        found = difflib.get_close_matches(str(name), list(self._entries), n=1, cutoff=0.6)
        return found[0] if found else None

    def unknown_message(self, name: Any) -> str:
        hint = self.closest(name)
        return (f"unknown {self.concept} {name!r}; choose one of {list(self._entries)}"
                + (f"; did you mean {hint!r}?" if hint else ""))

    def label(self, name: str) -> str:
        """The entry's label, or the name itself for names not registered."""
        entry = self._entries.get(name)
        return entry.label if entry else name

    def needing(self, need: str) -> tuple[str, ...]:
        """Names whose entry needs ``need``."""
        return tuple(n for n, e in self._entries.items() if need in e.needs)
