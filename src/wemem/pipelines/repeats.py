"""Repeats over seeds: the chain from the splits on, once per seed of ``repeats.seeds``.

Each seed's copy of a pipeline is the Kedro namespace ``seed<N>`` (:func:`wemem.ml.grid.seed_namespace`):
its datasets are ``seed43.splits``, ``seed43.l1_unstructured_s60.rsw.pruned_models``, … (the
catalog's ``seed{seed}.*`` patterns put them under ``.../seed43/...``); only ``dataset_arrays`` and
``dataset_info`` are shared. Parameters keep their names, except ``params:seed``: the node no
longer reads it, its function holds its repeat's seed (:class:`SeededNode`). With
``repeats.seeds: null`` nothing is wrapped, so the graph, the names and the paths are those of a
run without repeats.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any

from kedro.pipeline import Node, Pipeline

from wemem import structure
from wemem.ml.grid import seed_namespace

__all__ = ["SEED_PARAM", "SHARED", "SeededNode", "per_seed", "seeded", "seeded_names"]

SEED_PARAM = "params:seed"
SHARED = frozenset({"dataset_arrays", "dataset_info"})
"""Datasets every repeat reads as they are (the raw data does not depend on the seed)."""


class SeededNode:
    """A node function with its ``seed`` argument bound to one repeat's seed (a module-level
    class, so process-based runners can pickle it). It reads like the wrapped function without
    that argument: ``__name__``, signature and type hints (Kedro validates typed parameters
    from them)."""

    def __init__(self, func: Callable[..., Any], seed: int, position: int) -> None:
        self.func, self.seed, self.position = func, int(seed), int(position)
        sig = inspect.signature(func)
        params = list(sig.parameters.values())
        dropped = params[position].name
        self.__name__ = getattr(func, "__name__", type(func).__name__)
        self.__signature__ = sig.replace(parameters=params[:position] + params[position + 1:])
        self.__annotations__ = {k: v for k, v in typing.get_type_hints(func).items() if k != dropped}

    def __call__(self, *args: Any) -> Any:
        args_ = list(args)
        args_.insert(self.position, self.seed)
        return self.func(*args_)

    def __getstate__(self) -> tuple:
        return self.func, self.seed, self.position

    def __setstate__(self, state: tuple) -> None:
        self.__init__(*state)

    def __repr__(self) -> str:
        return f"SeededNode({self.__name__}, seed={self.seed})"


def seeded(node: Node, seed: int) -> Node:
    """``node`` reading ``seed`` instead of ``params:seed`` (unchanged when it does not read it)."""
    if SEED_PARAM not in node.inputs:
        return node
    if not isinstance(node._inputs, list):  # the project's nodes read the seed positionally
        raise TypeError(f"node {node.name!r}: a seeded node takes its inputs as a list, got {node._inputs!r}")
    position = node._inputs.index(SEED_PARAM)
    inputs = node._inputs[:position] + node._inputs[position + 1:]
    return node._copy(func=SeededNode(node.func, seed, position), inputs=inputs)


def _one_seed(pipe: Pipeline, seed: int, shared: Iterable[str]) -> Pipeline:
    bound = Pipeline([seeded(n, seed) for n in pipe.nodes])
    free = bound.inputs()
    return Pipeline(bound, namespace=seed_namespace(seed), inputs=set(shared) & free,
                    parameters={p for p in free if p.startswith("params:")})


def per_seed(pipe: Pipeline, seeds: tuple[int, ...] | None | str = "current",
             shared: Iterable[str] = SHARED) -> Pipeline:
    """``pipe`` once per seed of ``repeats.seeds`` (``seeds``; by default the run's), each in
    its namespace ``seed<N>``; ``pipe`` itself when there are no repeats."""
    seeds = structure.current().seeds if seeds == "current" else seeds
    if seeds is None:
        return pipe
    return sum((_one_seed(pipe, s, shared) for s in seeds), Pipeline([]))


def seeded_names(name: str, seeds: tuple[int, ...] | None | str = "current") -> list[str]:
    """The dataset ``name`` of every repeat (``[name]`` without repeats)."""
    seeds = structure.current().seeds if seeds == "current" else seeds
    return [name] if seeds is None else [f"{seed_namespace(s)}.{name}" for s in seeds]
