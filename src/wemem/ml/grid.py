"""The experiment grid: which (pruning method × sparsity × defense variant) combinations run.

Each combination is one namespace of the pipelines (``l1_unstructured_s60.rsw``); the
reference rows are ``unpruned`` (the trained models as they are) and
``<method>_s<NN>.one_shot`` (one pruning step to the final sparsity, then Base fine-tuning).

Repeats (``repeats.seeds``) put the whole chain from the splits on once per seed, each in its
namespace ``seed<N>`` (so ``seed43.l1_unstructured_s60.rsw``); without them (``seeds: null``) the
chain runs once with the top-level ``seed`` and no seed namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Combo", "combos_from", "seed_namespace", "seeds_from"]


@dataclass(frozen=True)
class Combo:
    """One (pruning method, sparsity, defense variant) cell of the grid."""

    method: str | None
    sparsity: float | None
    variant: str
    one_shot: bool = False

    @property
    def namespace(self) -> str:
        if self.method is None:
            return self.variant
        return f"{self.method}_s{round(self.sparsity * 100):02d}.{self.variant}"

    @property
    def label(self) -> str:
        """A readable name of the combination for node labels (kedro-viz shows a node's name
        without its namespace): ``rsw_l1_unstructured_60``, ``one_shot_l1_unstructured_60``, ``unpruned``."""
        if self.method is None:
            return self.variant
        return f"{self.variant}_{self.method}_{round(self.sparsity * 100):02d}"

    @property
    def defense_variant(self) -> str:
        """The variant under ``defenses:`` it fine-tunes with (the one-shot reference: ``base``)."""
        return "base" if self.one_shot else self.variant

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "method": self.method,
            "sparsity": self.sparsity,
            "variant": self.variant,
            "one_shot": self.one_shot,
        }


def combos_from(pruning_defense: Mapping[str, Any]) -> tuple[Combo, ...]:
    """Expands ``pruning_defense.grid`` (+ its ``reference`` rows) into the combinations to run."""
    grid = pruning_defense.get("grid", {})
    refs = pruning_defense.get("reference", {})
    combos: list[Combo] = []
    if refs.get("unpruned", True):
        combos.append(Combo(None, None, "unpruned"))
    for method in grid.get("methods", []):
        for sparsity in (float(s) for s in grid.get("sparsities", [])):
            if refs.get("one_shot", True):
                combos.append(Combo(method, sparsity, "one_shot", one_shot=True))
            combos.extend(Combo(method, sparsity, d) for d in grid.get("defenses", []))
    return tuple(combos)


def seed_namespace(seed: int) -> str:
    """The namespace of one repeat: ``seed43``."""
    return f"seed{int(seed)}"


def seeds_from(repeats: Mapping[str, Any] | None) -> tuple[int, ...] | None:
    """``repeats.seeds`` as a tuple (``None``: one run with the top-level ``seed``, no namespace)."""
    seeds = (repeats or {}).get("seeds")
    return None if seeds is None else tuple(int(s) for s in seeds)
