"""Sweeps: a named spec in ``conf/`` that expands into one defense variant per setting.

``sweeps:`` (``conf/base/parameters_pruning_defense.yml``) maps a sweep name to the variants it
starts from (names under ``defenses:``) and the settings it varies::

    sweeps:
      rmr_lambda: {variants: rmr, vary: {lambda_r: [0.01, 0.1, 1]}}
      windows: {variants: [rsw, swmr], vary: {w: [10, 15], s: [1], order: [h2l, l2h]}}

Each point of ``variants × product(vary)`` is a new variant: the starting variant's settings
with the varied ones replaced, named ``<variant>_<key>_<value>...`` with the value made safe for
a namespace (``rmr_lambda_r_0p01``, ``rsw_w_10_s_1_order_h2l``: no dots, ``.`` → ``p``, ``-`` →
``m``). ``pruning_defense.grid.sweeps`` enables sweeps by name (a list, or one string where
``+`` separates names: ``--params pruning_defense.grid.sweeps=rmr_lambda`` works although Kedro
1.7 splits ``--params`` at commas); their variants join ``grid.defenses`` and so run for every
method × sparsity of the grid, each its own namespace.

:func:`expand` is applied to the run's parameters by the project's config loader, so every
later consumer (validation, the grid, the nodes' ``params:defenses.<variant>``, MLflow) sees
plain variants. :func:`problems` lists what is wrong with a spec, one line each.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationError

from .schema import Section, closest, first_error

__all__ = ["SweepSpec", "enabled", "expand", "point_name", "problems", "sweep_variants"]

_SAFE = re.compile(r"[A-Za-z0-9_]+")


def _names(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    return v


class SweepSpec(Section):
    """One entry of ``sweeps:``: the starting variant(s) and ``setting: [values]`` to vary."""

    variants: Annotated[list[str], BeforeValidator(_names)]
    vary: dict[str, list[Any]]


def _tag(value: Any) -> str:
    """A value as a namespace-safe word: 0.01 → ``0p01``, 1.0 → ``1``, -2 → ``m2``, h2l → ``h2l``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = repr(value) if isinstance(value, float) else str(value)
    text = text.replace(".", "p").replace("-", "m").replace("+", "")
    if not _SAFE.fullmatch(text):
        raise ValueError(f"value {value!r} cannot name a namespace (letters, digits, '_', '.', '-' only)")
    return text


def point_name(variant: str, point: Mapping[str, Any]) -> str:
    """The variant name of one sweep point: ``<variant>_<key>_<value>`` per varied key."""
    return "_".join([variant, *(f"{k}_{_tag(v)}" for k, v in point.items())])


def enabled(grid: Mapping[str, Any]) -> list[str]:
    """The sweep names ``pruning_defense.grid.sweeps`` enables (a list, a ``+``-joined string or none)."""
    value = grid.get("sweeps") if isinstance(grid, Mapping) else None
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [n.strip() for n in value.split("+") if n.strip()]
    return list(value) if isinstance(value, list) else []


def sweep_variants(spec: SweepSpec, defenses: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The variants a sweep makes, by name, in order (variant, then the product of ``vary``)."""
    out: dict[str, dict[str, Any]] = {}
    keys = list(spec.vary)
    for variant in spec.variants:
        start = dict(defenses[variant])
        for values in itertools.product(*(spec.vary[k] for k in keys)):
            point = dict(zip(keys, values))
            out[point_name(variant, point)] = {**start, **point}
    return out


def problems(params: Mapping[str, Any]) -> list[str]:
    """Every problem of ``sweeps:`` and ``pruning_defense.grid.sweeps``, one line each
    (``path = value: reason; allowed: …``); [] when expansion can go ahead."""
    sweeps = params.get("sweeps") or {}
    defenses = params.get("defenses") if isinstance(params.get("defenses"), Mapping) else {}
    out: list[str] = []
    if not isinstance(sweeps, Mapping):
        return [f"sweeps = {sweeps!r}: not a mapping; allowed: a mapping of sweep name to "
                "{variants: [...], vary: {setting: [values]}}"]
    made: dict[str, str] = {}
    for name, raw in sweeps.items():
        path = f"sweeps.{name}"
        try:
            spec = SweepSpec.model_validate(raw)
        except ValidationError as exc:
            out.append(f"{path}: {first_error(exc)}; allowed: keys 'variants' (names under 'defenses') and "
                       "'vary' (setting: [values])")
            continue
        for v in spec.variants:
            if v not in defenses:
                hint = closest(v, defenses)
                out.append(f"{path}.variants = {v!r}: no such variant under 'defenses'; allowed: {list(defenses)}"
                           + (f"; did you mean {hint!r}?" if hint else ""))
        for key, values in spec.vary.items():
            if key == "defense":
                out.append(f"{path}.vary.defense: a sweep cannot change the defense; allowed: its settings "
                           "(sweep over several defenses by naming several variants)")
            if not values:
                out.append(f"{path}.vary.{key} = []: empty; allowed: a list of at least one value")
            for value in values:
                try:
                    _tag(value)
                except ValueError as exc:
                    out.append(f"{path}.vary.{key} = {value!r}: {exc}; allowed: numbers, true/false or simple words")
        if out:
            continue
        for variant, settings in sweep_variants(spec, defenses).items():
            if variant in made:
                out.append(f"{path}: makes variant {variant!r} again (also made by sweeps.{made[variant]}); "
                           "allowed: sweeps whose points differ")
            elif variant in defenses and dict(defenses[variant]) != settings:
                out.append(f"{path}: makes variant {variant!r}, which 'defenses' already defines differently; "
                           "allowed: rename that variant or change the sweep")
            made[variant] = name
    grid = (params.get("pruning_defense") or {}).get("grid") or {}
    value = grid.get("sweeps") if isinstance(grid, Mapping) else None
    if value is not None and not isinstance(value, (str, list)):
        out.append(f"pruning_defense.grid.sweeps = {value!r}: not a name or a list; allowed: a list of "
                   f"sweep names or one string ('a+b' for several) from {list(sweeps)}")
    for i, name in enumerate(enabled(grid)):
        if not isinstance(name, str) or name not in sweeps:
            hint = closest(name, sweeps)
            out.append(f"pruning_defense.grid.sweeps[{i}] = {name!r}: no such sweep under 'sweeps'; "
                       f"allowed: {list(sweeps)}" + (f"; did you mean {hint!r}?" if hint else ""))
    return out


def expand(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every sweep's variants added under ``defenses:`` and the enabled sweeps'
    variants appended to ``pruning_defense.grid.defenses``. Unchanged (a copy) when the spec has
    problems: validation then reports them (:func:`problems`)."""
    out = dict(params)
    if not params.get("sweeps") or problems(params):
        return out
    out = copy.deepcopy(out)
    made: dict[str, dict[str, list[str]]] = {}
    for name, raw in params["sweeps"].items():
        variants = sweep_variants(SweepSpec.model_validate(raw), out["defenses"])
        made[name] = list(variants)
        for variant, settings in variants.items():
            out["defenses"].setdefault(variant, settings)
    grid = out.get("pruning_defense", {}).get("grid")
    if isinstance(grid, dict):
        current = list(grid.get("defenses") or [])
        for name in enabled(grid):
            current += [v for v in made[name] if v not in current]
        grid["defenses"] = current
    return out
