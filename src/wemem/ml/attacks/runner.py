"""``run_attacks``: run the chosen attacks of :data:`ATTACKS` on one target."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tqdm.auto import tqdm

from .base import ATTACKS, AttackContext, AttackData, AttackResult, validate_attack_data


def run_attacks(
    data: AttackData,
    attacks: Iterable[str] | None = None,
    settings: Mapping[str, Any] | None = None,
    *,
    training: Any = None,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> dict[str, AttackResult]:
    """Run every attack in ``attacks`` (in that order) and return name → result.

    Args:
        attacks: registered names (None: all, in registration order); an unknown name raises
            :class:`wemem.ml.registry.UnknownName` before anything runs.
        settings: attack name → its settings (an instance of its schema or a mapping for it);
            an attack left out gets its schema's defaults.
        training: the classifier family's shared :class:`AttackModelSettings` (None: defaults).
        device, seed: where the attack models train, and their seed.
    """
    settings = settings or {}
    entries = [ATTACKS[name] for name in (ATTACKS if attacks is None else attacks)]
    contexts = [AttackContext(e.parse(settings.get(e.name)), training, str(device), int(seed)) for e in entries]
    validate_attack_data(data)
    results: dict[str, AttackResult] = {}
    bar = tqdm(list(zip(entries, contexts)), desc="attacks", disable=None if progress else True)
    for entry, ctx in bar:
        bar.set_postfix_str(entry.name)
        results[entry.name] = entry.obj(data, ctx)
    return results
