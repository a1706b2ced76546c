"""``run_attacks``: run the configured attacks from ``ATTACK_REGISTRY``."""

from __future__ import annotations

from tqdm.auto import tqdm

from .base import ATTACK_REGISTRY, AttackConfig, AttackData, AttackResult, validate_attack_data


def run_attacks(data: AttackData, config: AttackConfig, progress: bool = False) -> dict[str, AttackResult]:
    """Run every attack named in ``config.attacks`` (in that order) and return name → result."""
    unknown = [n for n in config.attacks if n not in ATTACK_REGISTRY]
    if unknown:
        raise KeyError(f"unknown attack(s) {unknown}; known: {sorted(ATTACK_REGISTRY)}")
    validate_attack_data(data)
    results: dict[str, AttackResult] = {}
    bar = tqdm(config.attacks, desc="attacks", disable=None if progress else True)
    for name in bar:
        bar.set_postfix_str(name)
        results[name] = ATTACK_REGISTRY[name](data, config)
    return results
