"""Checks of a run that need more than the parameter schema, made before any node runs
(:class:`wemem.hooks.ValidationHook`): every setting that names a file or folder, and every
combination of the grid that cannot run at all.

A combination cannot run when its defense refuses the dataset's model: a defense class may
declare ``preflight(model: str, settings) -> str | None`` (a classmethod returning why it cannot
train that model, or None); every combination it refuses is named in one error, before minutes of
training are spent on the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["file_problems", "combination_problems", "check_run"]


def _abs(value: str, root: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def file_problems(params: Mapping[str, Any], root: Path) -> list[str]:
    """``memscore.import_csv`` must be an existing file; ``data_ingestion.raw_dir``, when set with
    downloads off, an existing folder (with downloads on, the loader downloads into it)."""
    problems = []
    csv = (params.get("memscore") or {}).get("import_csv")
    if csv:
        path = _abs(str(csv), root)
        if not path.is_file():
            problems.append(f"memscore.import_csv = {csv!r}: no such file (looked for {path}); allowed: a CSV in the "
                            "reference format (header ',0', then 'index,score'), or null to estimate the scores")
    ingestion = params.get("data_ingestion") or {}
    raw_dir = ingestion.get("raw_dir")
    if raw_dir and not ingestion.get("download", True):
        path = _abs(str(raw_dir), root)
        if not path.is_dir():
            problems.append(f"data_ingestion.raw_dir = {raw_dir!r}: no such folder (looked for {path}) and "
                            "data_ingestion.download is false; allowed: the folder holding the dataset's raw files, "
                            "or null for data_ingestion.raw_root/<dataset>")
    return problems


def combination_problems(params: Mapping[str, Any]) -> list[str]:
    """The grid's combinations whose defense refuses the dataset's model (``preflight``)."""
    from wemem.ml.defenses import DEFENSES, resolve_settings
    from wemem.ml.grid import combos_from

    dataset = params.get("dataset")
    settings = (params.get("datasets") or {}).get(dataset) or {}
    model = settings.get("model")
    defaults = settings.get("defense_defaults") or {}
    variants = params.get("defenses") or {}
    problems = []
    for combo in combos_from(params.get("pruning_defense") or {}):
        if combo.method is None:
            continue
        variant = variants.get(combo.defense_variant) or {}
        defense = variant.get("defense", combo.defense_variant)
        check = getattr(DEFENSES[defense].obj, "preflight", None) if defense in DEFENSES else None
        if check is None:
            continue
        reason = check(model, resolve_settings(defense, variant, defaults))
        if reason:
            problems.append(f"combination {combo.namespace} ({defense} on {model}, dataset {dataset}) cannot run: "
                            f"{reason}; remove {combo.variant!r} from pruning_defense.grid.defenses or choose "
                            "another model")
    return problems


def check_run(params: Mapping[str, Any], root: Path) -> None:
    """Raises one :class:`~wemem.params.ParameterError` with every file and combination problem."""
    from wemem.params import ParameterError

    problems = file_problems(params, root) + combination_problems(params)
    if problems:
        raise ParameterError(problems)
