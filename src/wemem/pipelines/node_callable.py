"""Base class for node functions that carry per-node state (a shard number, a combination).

Such nodes are instances of module-level classes rather than closures, so that process-based
runners (``ParallelRunner``, ``DaskRunner``) can pickle them. Kedro reads a node function's type
hints (``typing.get_type_hints``) to validate typed parameters, and that call refuses instances
("is not a module, class, method, or function"), logging one warning per node on every run.
Giving each instance its ``__call__``'s resolved annotations makes it read like a function.
"""

from __future__ import annotations

import typing


class NodeCallable:
    """A callable node function with a ``__name__`` and its ``__call__``'s type hints."""

    def __init__(self, name: str) -> None:
        self.__name__ = name
        self.__annotations__ = typing.get_type_hints(type(self).__call__)
