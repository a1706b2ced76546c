"""Typed parameters: one pydantic model per section of ``conf/*/parameters*.yml``.

:func:`validate_parameters` checks the whole parameter tree before any node runs and raises one
:class:`ParameterError` that lists every problem, each as ``path = value: what is wrong;
allowed: …`` (e.g. ``pruning_defense.grid.sparsities[1] = 1.2: out of range; allowed: a number
in [0, 1)``). Pydantic checks each value (types, ranges, names, unknown keys); the ``_*_relations``
functions check how values relate (the chosen dataset has an entry, grid variants are defined, a variant's
settings belong to its defense, ``n_shards <= m``, …). Names are checked against the code's own
registries, so a new model, loader, defense, attack or pruning method is accepted without edits
here. Top-level keys not modelled here are ignored; inside a section unknown keys are errors.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
import types
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from wemem.ml.attacks import ATTACK_NAMES
from wemem.ml.data import LOADERS
from wemem.ml.defenses import DEFENSES, setting_names
from wemem.ml.memorization import ESTIMATORS, FIRST_LAYERS
from wemem.ml.models import MODEL_REGISTRY
from wemem.ml.pruning import PRUNING_METHODS
from wemem.ml.ranking import ORDERS

__all__ = ["ParameterError", "ValidatedParams", "validate_parameters"]


class ParameterError(ValueError):
    """Every problem found in the parameters; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the parameters (conf/*/parameters*.yml):\n{lines}")


# --------------------------------------------------------------------------- value types
def _fail(reason: str, allowed: str, match: str | None = None) -> PydanticCustomError:
    return PydanticCustomError("wemem", "{reason}", {"reason": reason, "allowed": allowed, "match": match})


def _close(value: Any, names: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(str(value), [str(n) for n in names], n=1, cutoff=0.6)
    return found[0] if found else None


def _number(kind: type, lo: float | None = None, hi: float | None = None, *, lo_open=False, hi_open=False) -> Any:
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
            raise _fail(f"not {noun}", allowed)
        if kind is int and not float(v).is_integer():
            raise _fail("not an integer", allowed)
        below = lo is not None and (v <= lo if lo_open else v < lo)
        above = hi is not None and (v >= hi if hi_open else v > hi)
        if below or above:
            raise _fail("out of range", allowed)
        return kind(v)

    check.allowed = allowed
    return Annotated[kind, BeforeValidator(check)]


def _choice(what: str, names: Iterable[str], normalise=lambda v: v) -> Any:
    """A string from ``names`` (a registry); the error lists them and the closest match."""

    def check(v: Any) -> str:  # reads the registry at call time, so later registrations count
        key = normalise(v) if isinstance(v, str) else v
        if key not in names:
            raise _fail(f"unknown {what}", str(list(names)), _close(v, names))
        return key

    check.allowed = f"one of {list(names)}"
    return Annotated[str, BeforeValidator(check)]


def _device(v: Any) -> str:
    if not (isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v)):
        raise _fail("not a torch device", _device.allowed)
    return v


_device.allowed = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


Int = _number(int)
PosInt = _number(int, 1)
NonNeg = _number(float, 0)
Pos = _number(float, 0, lo_open=True)
Unit = _number(float, 0, 1)                                  # [0, 1]
Fraction = _number(float, 0, 1, lo_open=True, hi_open=True)  # (0, 1)
Sparsity = _number(float, 0, 1, hi_open=True)                # [0, 1)
Device = Annotated[str, BeforeValidator(_device)]
DatasetName = _choice("dataset", LOADERS)
DefenseName = _choice("defense", DEFENSES)
_order_key = lambda v: v.lower().replace("→", "2").replace("->", "2").replace("_", "")  # noqa: E731 as in defenses


# --------------------------------------------------------------------------- sections
class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DefenseSettings(Section):
    """Every setting any defense takes (which ones a defense takes: ``setting_names``)."""

    w: PosInt | None = None
    s: PosInt | None = None
    tau: Unit | None = None
    order: _choice("order", ORDERS, _order_key) | None = None
    tau_mode: _choice("tau_mode", ("value", "fraction")) | None = None
    lambda_g: NonNeg | None = None
    lambda_r: NonNeg | None = None
    lam: NonNeg | None = None
    theta: NonNeg | None = None
    sigma: NonNeg | None = None
    clip: Pos | None = None
    delta: Fraction | None = None
    alpha: NonNeg | None = None
    attack_steps: PosInt | None = None
    attack_lr: Pos | None = None


class DefenseVariant(DefenseSettings):
    """``defenses.<variant>``: the strategy (default: the variant's own name) and its settings."""

    defense: DefenseName | None = None


class DefenseDefaults(DefenseSettings):
    """``datasets.<name>.defense_defaults``: the paper's window, step and threshold."""

    w: PosInt
    s: PosInt
    tau: Unit


class DatasetSettings(Section):
    loader: dict[str, Any] = {}
    model: _choice("model", MODEL_REGISTRY)
    n_shadows: PosInt
    defense_defaults: DefenseDefaults


class Split(Section):
    train_pool_fraction: Fraction = 0.8
    victim_fraction: Fraction = 0.5
    member_fraction: Fraction = 0.9
    dev_fraction: Fraction = 0.34


class DataIngestion(Section):
    raw_root: str
    raw_dir: str | None = None
    download: bool = True
    split: Split = Split()


class MemScore(Section):
    m: _number(int, 2) = 64
    subset_fraction: Fraction = 0.7
    epochs: PosInt = 30
    estimator: _choice("estimator", ESTIMATORS) = "correctness"
    n_shards: PosInt = 1
    batch_size: PosInt = 128
    lr: Pos = 1e-3
    weight_decay: NonNeg = 5e-4
    import_csv: str | None = None
    models_per_chunk: PosInt | None = None  # speed settings of MemScoreConfig
    first_layer: _choice("first_layer", FIRST_LAYERS) = "auto"
    sparse_threshold: Unit = 0.25
    converge_acc: Unit | None = 0.99
    converge_every: PosInt = 2
    converge_check_rows: PosInt = 512


class AttackModel(Section):
    epochs: PosInt = 100
    lr: Pos = 1e-3
    momentum: NonNeg = 0.9
    weight_decay: NonNeg = 5e-4
    batch_size: PosInt = 128
    milestones: list[PosInt] = [50, 75]


class Samia(Section):
    n_draws: PosInt = 10
    eps: Pos = 1e-3


class Rmia(Section):
    a: Unit = 0.3
    gamma: Pos = 1.0


class MiaEvaluation(Section):
    attacks: list[_choice("attack", ATTACK_NAMES)]
    attack_model: AttackModel = AttackModel()
    samia: Samia = Samia()
    rmia: Rmia = Rmia()
    roc_points: _number(int, 2) = 200


class Training(Section):
    epochs: PosInt
    patience: PosInt
    batch_size: PosInt
    lr: Pos
    weight_decay: NonNeg


class Finetune(Section):
    epochs: PosInt
    patience: PosInt
    batch_size: PosInt
    lr: Pos


class Grid(Section):
    methods: list[_choice("pruning method", PRUNING_METHODS)]
    sparsities: list[Sparsity]
    defenses: list[str]


class Reference(Section):
    unpruned: bool = True
    one_shot: bool = True


class PruningDefense(Section):
    n_iter: PosInt
    finetune: Finetune
    grid: Grid
    reference: Reference = Reference()


class Ranking(Section):
    preview_epochs: PosInt


class ValidatedParams(BaseModel):
    """The whole parameter tree; top-level keys not listed here are ignored."""

    model_config = ConfigDict(extra="ignore")

    dataset: DatasetName
    seed: Int
    device: Device
    progress: bool
    torch_threads: _number(int, 0) = 0
    deterministic: bool = True
    datasets: dict[DatasetName, DatasetSettings]
    data_ingestion: DataIngestion
    memscore: MemScore
    training: Training
    pruning_defense: PruningDefense
    defenses: dict[str, DefenseVariant]
    mia_evaluation: MiaEvaluation
    ranking: Ranking


# --------------------------------------------------------------------------- messages
def _problem(path: str, value: Any, reason: str, allowed: str, match: str | None = None) -> str:
    hint = f"; did you mean {match!r}?" if match else ""
    return f"{path} = {value!r}: {reason}; allowed: {allowed}{hint}"


def _path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) in (Annotated, Union, types.UnionType):
        tp = next(a for a in get_args(tp) if a is not type(None))
    return tp


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model class at ``loc`` (a pydantic error location), or None."""
    tp: Any = ValidatedParams
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            tp = tp.model_fields[part].annotation if part in tp.model_fields else None
        else:  # dict[str, X] or list[X]: the key or index leads to X
            tp = get_args(tp)[-1] if get_args(tp) else None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _expected(loc: tuple) -> str:
    """What the field at ``loc`` takes, for 'missing' errors."""
    model = _model_at(loc[:-1])
    field = model.model_fields.get(loc[-1]) if model else None
    if field is None:
        return "a value"
    for meta in field.metadata:
        if hasattr(getattr(meta, "func", None), "allowed"):
            return meta.func.allowed
    sub = _unwrap(field.annotation)
    if isinstance(sub, type) and issubclass(sub, BaseModel):
        return "a mapping with keys " + ", ".join(sub.model_fields)
    return getattr(get_origin(sub) or sub, "__name__", str(sub))


_TYPE_ERRORS = {
    "bool": ("not true/false", "true or false"),
    "string": ("not a string", "a string"),
    "list": ("not a list", "a list"),
    "dict": ("not a mapping", "a mapping of keys to values"),
    "model": ("not a mapping", "a mapping of keys to values"),
}


def _message(err: Mapping[str, Any]) -> str:
    loc = tuple(p for p in err["loc"] if p != "[key]")
    path, value, ctx = _path(loc), err.get("input"), err.get("ctx") or {}
    if err["type"] == "wemem":
        return _problem(path, value, ctx["reason"], ctx["allowed"], ctx.get("match"))
    if err["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        keys = list(model.model_fields) if model else []
        return _problem(path, value, f"unknown key {loc[-1]!r}", ", ".join(keys), _close(loc[-1], keys))
    if err["type"] == "missing":
        return f"{path}: missing; required: {_expected(loc)}"
    reason, allowed = _TYPE_ERRORS.get(err["type"].split("_")[0], (err["msg"], "see conf/base/parameters*.yml"))
    return _problem(path, value, reason, allowed)


# --------------------------------------------------------------------------- relations
# Checks that span keys. They read the raw dict defensively (values may be invalid; those are
# reported by pydantic) so that every problem is reported in one go.
def _sect(d: Any, key: str) -> Mapping[str, Any]:
    return d[key] if isinstance(d, Mapping) and isinstance(d.get(key), Mapping) else {}


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _dataset_relations(params: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    dataset, datasets, memscore = params.get("dataset"), _sect(params, "datasets"), _sect(params, "memscore")
    if isinstance(dataset, str) and dataset in LOADERS and dataset not in datasets:
        out.append(_problem("dataset", dataset, "no entry under 'datasets'", str(list(datasets)),
                            _close(dataset, datasets)))
    for name, settings in datasets.items():  # loader options are the loader's keyword arguments
        if name in LOADERS:
            takes = [k for k in list(inspect.signature(LOADERS[name]).parameters)[1:] if k != "download"]
            out += [_problem(f"datasets.{name}.loader.{k}", v, f"not an option of the {name} loader", str(takes),
                             _close(k, takes)) for k, v in _sect(settings, "loader").items() if k not in takes]
    m, n_shards = memscore.get("m"), memscore.get("n_shards", 1)
    if _int(m) and _int(n_shards) and m >= 2 and 1 <= n_shards and n_shards > m:  # else reported above
        out.append(_problem("memscore.n_shards", n_shards, f"more shards than models (m={m})",
                            f"an integer in [1, {m}]"))
    return out


def _defense_relations(params: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, variant in _sect(params, "defenses").items():  # a variant's settings are ones its defense takes
        if not isinstance(variant, Mapping):
            continue
        defense = variant.get("defense", name)
        if "defense" not in variant and name not in DEFENSES:
            out.append(_problem(f"defenses.{name}", dict(variant), "no 'defense' key and the name is not a defense",
                                f"a 'defense' key set to one of {list(DEFENSES)}"))
        if defense in DEFENSES:
            takes, _ = setting_names(defense)
            out += [_problem(f"defenses.{name}.{k}", v, f"not a setting of defense {defense!r}", str(takes),
                             _close(k, takes))
                    for k, v in variant.items() if k in DefenseSettings.model_fields and k not in takes]
    return out


def _grid_relations(params: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    defenses, datasets, dataset = _sect(params, "defenses"), _sect(params, "datasets"), params.get("dataset")
    grid, refs = _sect(_sect(params, "pruning_defense"), "grid"), _sect(_sect(params, "pruning_defense"), "reference")
    lists = {key: grid[key] if isinstance(grid.get(key), list) else [] for key in ("methods", "sparsities", "defenses")}
    for i, variant in enumerate(lists["defenses"]):
        if isinstance(variant, str) and variant not in defenses:
            out.append(_problem(f"pruning_defense.grid.defenses[{i}]", variant, "no such variant under 'defenses'",
                                str(list(defenses)), _close(variant, defenses)))
    one_shot = bool(lists["methods"] and lists["sparsities"] and refs.get("one_shot", True))
    if one_shot and "base" not in defenses:
        out.append(_problem("pruning_defense.reference.one_shot", refs.get("one_shot", True),
                            "the one-shot reference fine-tunes with the 'base' variant, which 'defenses' lacks",
                            "false, or define defenses.base"))

    # a defense's required settings come from the variant or the chosen dataset's defense_defaults (the keys
    # every defense_defaults must hold are checked there)
    entry = datasets.get(dataset) if isinstance(dataset, str) else None
    defaults = _sect(entry, "defense_defaults")
    always = [k for k, f in DefenseDefaults.model_fields.items() if f.is_required()]
    used = [v for v in lists["defenses"] if isinstance(v, str)] + (["base"] if one_shot else [])
    for name in dict.fromkeys(used) if isinstance(entry, Mapping) else ():
        variant = defenses.get(name)
        defense = variant.get("defense", name) if isinstance(variant, Mapping) else None
        if defense in DEFENSES:
            out += [_problem(f"defenses.{name}", dict(variant), f"defense {defense!r} needs setting {r!r}, set "
                             f"neither here nor in datasets.{dataset}.defense_defaults", f"add {r!r} to either")
                    for r in setting_names(defense)[1] if r not in variant and r not in defaults and r not in always]

    for key, values in lists.items():  # every grid cell is its own namespace
        seen: dict[Any, Any] = {}
        for i, v in enumerate(values):
            if key == "sparsities" and (_int(v) or isinstance(v, float) and math.isfinite(v)):
                tag = round(v * 100)  # namespaces name sparsities by whole percent
            elif key != "sparsities" and isinstance(v, str):
                tag = v
            else:
                continue
            if tag in seen:
                out.append(_problem(f"pruning_defense.grid.{key}[{i}]", v, f"repeats {seen[tag]!r} (same namespace)",
                                    "distinct values" + (" (by whole percent)" if key == "sparsities" else "")))
            seen.setdefault(tag, v)
    return out


def validate_parameters(params: Mapping[str, Any]) -> ValidatedParams:
    """Checks the whole parameter tree; raises one :class:`ParameterError` listing every problem."""
    if not isinstance(params, Mapping):
        raise ParameterError([_problem("parameters", params, "not a mapping", "a mapping of keys to values")])
    problems: list[str] = []
    validated = None
    try:
        validated = ValidatedParams.model_validate(dict(params))
    except ValidationError as exc:
        problems += [_message(e) for e in exc.errors()]
    relations = _dataset_relations(params) + _defense_relations(params) + _grid_relations(params)
    problems += [p for p in relations if p not in problems]
    if problems:
        raise ParameterError(problems)
    return validated
