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

import math
import types
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from wemem.ml.data import DATASETS, loader_options
from wemem.ml.defenses import DEFENSES, setting_names
from wemem.ml.evaluation import MiaEvaluationSettings
from wemem.ml.memorization import MemScoreSettings
from wemem.ml.models import MODELS
from wemem.ml.pruning import PRUNING_METHODS
from wemem.ml.ranking import TAU_MODES
from wemem.ml.sweeps import problems as sweep_problems
from wemem.ml.train import FinetuneSettings, TrainSettings
from wemem.ml.schema import (
    Device,
    Fraction,
    Int,
    PosInt,
    Section,
    Sparsity,
    Unit,
    choice,
    closest,
    fail,
    number,
)

__all__ = ["ParameterError", "ValidatedParams", "validate_parameters"]


class ParameterError(ValueError):
    """Every problem found in the parameters; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the parameters (conf/*/parameters*.yml):\n{lines}")


# --------------------------------------------------------------------------- value types
# (shared with every settings schema of the library: wemem.ml.schema)
_fail, _close, _number, _choice = fail, closest, number, choice
DatasetName = _choice("dataset", DATASETS)


# --------------------------------------------------------------------------- sections
# Each defense's and each attack's own settings are declared next to its class (its registry
# entry's schema); the sections here are the run's and the dataset's.
class DefenseDefaults(Section):
    """``datasets.<name>.defense_defaults``: the paper's window, step and threshold for the
    dataset, used by every defense variant that takes them and leaves them out."""

    w: PosInt
    s: PosInt
    tau: Unit
    tau_mode: _choice("tau_mode", TAU_MODES) = "value"


class DatasetSettings(Section):
    """``datasets.<name>``: loader options, model, shadow count and defense defaults. The chosen
    dataset's entry is the parameter ``dataset_settings``."""

    loader: dict[str, Any] = {}
    model: _choice("model", MODELS)
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


class Grid(Section):
    methods: list[_choice("pruning method", PRUNING_METHODS)]
    sparsities: list[Sparsity]
    defenses: list[str]
    sweeps: list[str] | str | None = None  # names under `sweeps:` (wemem.ml.sweeps); their variants join `defenses`


class Reference(Section):
    unpruned: bool = True
    one_shot: bool = True


class PruningDefense(Section):
    n_iter: PosInt
    finetune: FinetuneSettings
    grid: Grid
    reference: Reference = Reference()


class Ranking(Section):
    preview_epochs: PosInt


class Repeats(Section):
    """``repeats``: ``seeds: null`` runs the chain once with the top-level ``seed``; a list of
    seeds runs it once per seed, each in its namespace ``seed<N>`` (:mod:`wemem.pipelines.repeats`)."""

    seeds: list[_number(int, 0)] | None = None


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
    memscore: MemScoreSettings  # declared with the estimator (wemem.ml.memorization.settings)
    training: TrainSettings
    pruning_defense: PruningDefense
    defenses: dict[str, dict[str, Any]]  # each variant checked by its defense's schema (_defense_relations)
    sweeps: dict[str, Any] = {}  # checked by wemem.ml.sweeps.problems; expanded into `defenses` by the config loader
    mia_evaluation: MiaEvaluationSettings
    ranking: Ranking
    repeats: Repeats = Repeats()


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


def _message(err: Mapping[str, Any], prefix: tuple = ()) -> str:
    loc = prefix + tuple(p for p in err["loc"] if p != "[key]")
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
    if isinstance(dataset, str) and dataset in DATASETS and dataset not in datasets:
        out.append(_problem("dataset", dataset, "no entry under 'datasets'", str(list(datasets)),
                            _close(dataset, datasets)))
    for name, settings in datasets.items():  # loader options are the loader's keyword arguments
        if name in DATASETS:
            takes = loader_options(name)  # the keyword arguments of DATASETS[name].obj
            out += [_problem(f"datasets.{name}.loader.{k}", v, f"not an option of the {name} loader", str(takes),
                             _close(k, takes)) for k, v in _sect(settings, "loader").items() if k not in takes]
    m, n_shards = memscore.get("m"), memscore.get("n_shards", 1)
    if _int(m) and _int(n_shards) and m >= 2 and 1 <= n_shards and n_shards > m:  # else reported above
        out.append(_problem("memscore.n_shards", n_shards, f"more shards than models (m={m})",
                            f"an integer in [1, {m}]"))
    return out


def _defense_relations(params: Mapping[str, Any]) -> list[str]:
    """Each ``defenses.<variant>``: its defense exists, and its settings pass that defense's schema
    (required settings may come from the dataset's defaults: checked with the grid)."""
    out: list[str] = []
    for name, variant in _sect(params, "defenses").items():
        path = f"defenses.{name}"
        if not isinstance(variant, Mapping):
            out.append(_problem(path, variant, "not a mapping", "a mapping with 'defense' and its settings"))
            continue
        defense = variant.get("defense", name)
        if "defense" not in variant and name not in DEFENSES:
            out.append(_problem(path, dict(variant), "no 'defense' key and the name is not a defense",
                                f"a 'defense' key set to one of {list(DEFENSES)}"))
            continue
        if defense not in DEFENSES:
            out.append(_problem(f"{path}.defense", defense, "unknown defense", str(list(DEFENSES)),
                                _close(defense, DEFENSES)))
            continue
        takes = sorted(setting_names(defense)[0])
        given = {k: v for k, v in variant.items() if k != "defense"}
        out += [_problem(f"{path}.{k}", v, f"not a setting of defense {defense!r}", str(takes), _close(k, takes))
                for k, v in given.items() if k not in takes]
        try:
            DEFENSES[defense].settings.model_validate({k: v for k, v in given.items() if k in takes})
        except ValidationError as exc:
            out += [_message(e, prefix=("defenses", name)) for e in exc.errors() if e["type"] != "missing"]
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


def _repeats_relations(params: Mapping[str, Any]) -> list[str]:
    seeds = _sect(params, "repeats").get("seeds")
    if not isinstance(seeds, list):
        return []
    if not seeds:
        return [_problem("repeats.seeds", seeds, "an empty list runs nothing",
                         "null (one run with the top-level seed) or a list of distinct seeds")]
    out, seen = [], set()
    for i, s in enumerate(seeds):
        if _int(s) and s in seen:
            out.append(_problem(f"repeats.seeds[{i}]", s, "repeats an earlier seed (same namespace)", "distinct seeds"))
        seen.add(s)
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
    relations = (_dataset_relations(params) + _defense_relations(params) + _grid_relations(params)
                 + sweep_problems(params) + _repeats_relations(params))
    problems += [p for p in relations if p not in problems]
    if problems:
        raise ParameterError(problems)
    return validated
