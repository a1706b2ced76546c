"""Membership evaluation of one combination, without Kedro: the settings (``mia_evaluation``),
the model outputs every attack needs, and the attack record that the reports and MLflow read.

* :class:`MiaEvaluationSettings`: which attacks run, the classifier family's training settings
  (``attack_model``), each attack's own settings under its name (validated by the schema it
  registered in :data:`wemem.ml.attacks.ATTACKS`) and the ROC points a record keeps.
* :func:`model_outputs`: float32 logits of every model of the combination on its own members
  and non-members (with SAMIA's sensitivity signal), the shadows on the victim's and on each
  other's samples, the victim and the shadows on population samples, and the memorisation
  scores of the victim's members.
* :func:`attack_record`: runs the attacks on those outputs and returns the ``attack_results``
  record (identity, accuracy, sample counts, cost, every attack's metrics with its empirical ε
  and memorisation slices, the attack chosen on the shadows, thinned ROC curves).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from .attacks import (
    ATTACKS,
    AttackData,
    AttackModelSettings,
    ModelOutputs,
    SamiaSettings,
    choose_attack,
    compute_sensitivity,
    epsilon_lower_bound,
    run_attacks,
    slice_metrics,
    strongest_attack,
    thinned_roc,
)
from .experiment import iter_roles, load_models, role_scores
from .grid import Combo
from .ranking import risk_threshold
from .answer import ReportSettings
from .schema import Fraction, Section, Unit, choice, closest, fail, number
from .experiment_tables import LAYOUTS
from .select import SelectSettings
from .train import predict_logits, resolve_device

__all__ = ["MiaEvaluationSettings", "model_outputs", "attack_data", "attack_record"]

log = logging.getLogger(__name__)

FAILED = "failed"
"""The key of the model outputs of a combination whose fine-tuning failed."""


# --------------------------------------------------------------------------- settings
def _line(err: Mapping[str, Any], prefix: tuple = ()) -> dict[str, Any]:
    """A pydantic error as an error line of a new ValidationError, its location under ``prefix``."""
    ctx = {**(err.get("ctx") or {}), "msg": err["msg"]}
    return {"type": PydanticCustomError(err["type"], "{msg}", ctx), "loc": (*prefix, *err["loc"]),
            "input": err["input"]}


def _unknown_key(loc: tuple, value: Any, keys: list[str]) -> dict[str, Any]:
    """The error line of an unknown key at ``loc``; names the keys allowed there."""
    error = fail(f"unknown key {loc[-1]!r}", ", ".join(keys), closest(loc[-1], keys))
    return {"type": error, "loc": loc, "input": value}


class MiaEvaluationSettings(Section):
    """``mia_evaluation``: the attacks to run (in this order), how the classifier family trains
    its attack models (``attack_model``), each attack's own settings under the attack's name
    (e.g. ``rmia: {a: 0.3, gamma: 1.0}``; left out: its schema's defaults) and how many points
    of each ROC curve a record keeps. Any other key is an error."""

    model_config = ConfigDict(extra="allow", frozen=True)

    attacks: list[choice("attack", ATTACKS)]
    attack_model: AttackModelSettings = AttackModelSettings()
    roc_points: number(int, 2) = 200
    choose_by: Literal["balanced_acc", "auc", "tpr_at_1fpr"] = "balanced_acc"  # chosen_attack's criterion
    choose_folds: number(int, 1) | None = None  # held-out shadows judged for chosen_attack (None: all)
    tau: Unit | None = None  # memorisation slices: high = score ≥ tau (None: the dataset's defense default)
    audit_delta: Fraction = 1e-5  # δ of the empirical ε bound (a DP-SGD row uses its accountant's δ)
    select: SelectSettings = SelectSettings()  # the select step's budget (wemem.ml.select)
    experiment_table: choice("experiment table layout", LAYOUTS) | None = None  # wemem.ml.experiment_tables
    report: ReportSettings = ReportSettings()  # the HTML report's accuracy budget (max_acc_drop)

    @model_validator(mode="wrap")
    @classmethod
    def _attack_sections(cls, data: Any, handler: Any) -> MiaEvaluationSettings:
        """Validates the keys named like an attack by that attack's schema (read from the
        registry at validation time, so attacks registered later count) and reports every
        problem of the section at once."""
        if not isinstance(data, Mapping):
            return handler(data)
        with_settings = {name: entry.settings for name, entry in ATTACKS.items() if entry.settings is not None}
        keys = [*cls.model_fields, *with_settings]
        sections: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for key, value in data.items():
            if key in cls.model_fields:
                continue
            schema = with_settings.get(key)
            if schema is None:
                errors.append(_unknown_key((key,), value, keys))
                continue
            try:
                sections[key] = value if isinstance(value, schema) else schema.model_validate(value)
            except ValidationError as exc:
                errors += [_unknown_key((key, *e["loc"]), e["input"], list(schema.model_fields))
                           if e["type"] == "extra_forbidden" else _line(e, (key,)) for e in exc.errors()]
        try:
            settings = handler({k: v for k, v in data.items() if k in cls.model_fields})
        except ValidationError as exc:
            errors = [_line(e) for e in exc.errors()] + errors
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        settings.__pydantic_extra__.update(
            {name: sections.get(name) or schema() for name, schema in with_settings.items()})
        return settings

    def settings_of(self, attack: str) -> Any:
        """The settings of ``attack`` (an instance of its schema; None for an attack without)."""
        found = (self.__pydantic_extra__ or {}).get(attack)
        return found if found is not None else ATTACKS[attack].parse(None)

    def attack_settings(self) -> dict[str, Any]:
        """Attack name → its settings, for every chosen attack that has settings."""
        return {a: self.settings_of(a) for a in self.attacks if ATTACKS[a].settings is not None}


# --------------------------------------------------------------------------- model outputs
def _as_input(x: torch.Tensor) -> torch.Tensor:
    """Float model input (images scaled to [0, 1]) so the SAMIA perturbation is meaningful."""
    return x.float().div(255.0) if x.dtype == torch.uint8 else x.float()


def _logits(net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """float32 logits computed in float32 (no autocast, even where training used bf16)."""
    return predict_logits(net, x, amp=False).float().cpu().numpy()


def model_outputs(
    payload: dict[str, Any],
    arrays: dict[str, np.ndarray],
    splits: dict[str, np.ndarray],
    info: dict[str, Any],
    model: str,
    sensitivity: SamiaSettings,
    seed: int,
    device: str | torch.device,
    memscores: Any = None,
) -> dict[str, np.ndarray]:
    """float32 logits every attack needs, for one combination's saved ``model`` modules.

    Each model on its own members (train) and non-members (test), with the SAMIA sensitivity
    (``sensitivity.n_draws`` perturbations of size ``sensitivity.eps``, seeded with ``seed``);
    every shadow (a reference OUT model) on the victim's samples and on every shadow's samples
    (to choose an attack on the shadows); the victim and the shadows on population samples (the
    victim's dev set, never used for scoring). ``memscores`` (a table ``index, score`` by
    train-pool position, e.g. the h2l rankings) gives ``victim/memscore``: the score of victim
    member i (the order of ``splits["victim/train"]``). A payload whose fine-tuning failed gives
    ``{"failed": [1]}``.
    """
    if payload["meta"].get("status", "ok") != "ok":
        return {FAILED: np.array([1])}
    dev = resolve_device(device)
    nets = load_models(payload, model, info, dev)
    out: dict[str, np.ndarray] = {}
    samples: dict[str, torch.Tensor] = {}
    population = None
    for role in iter_roles(arrays, splits, dev):
        net = nets[role.name]
        x = torch.cat([role.train[0], role.test[0]])
        y = torch.cat([role.train[1], role.test[1]])
        member = np.r_[np.ones(len(role.train[1]), bool), np.zeros(len(role.test[1]), bool)]
        samples[role.name] = x
        out[f"{role.name}/logits"] = _logits(net, x)
        out[f"{role.name}/labels"] = y.cpu().numpy()
        out[f"{role.name}/member"] = member
        out[f"{role.name}/sensitivity"] = compute_sensitivity(
            net, _as_input(x), n_draws=sensitivity.n_draws, eps=sensitivity.eps, seed=int(seed)
        ).cpu().numpy()
        if role.name == "victim":
            population = role.dev[0]
            out["population/labels"] = role.dev[1].cpu().numpy()
            out["victim/population_logits"] = _logits(net, population)
            if memscores is not None:
                table = memscores[memscores["order"] == "h2l"] if "order" in memscores else memscores
                out["victim/memscore"] = role_scores(table[["index", "score"]], splits, role.train_rows)
                out["memscore/pool"] = table.sort_values("index")["score"].to_numpy(np.float64)
    shadows = [n for n in nets if n != "victim"]
    out["reference/on_target"] = np.stack([_logits(nets[s], samples["victim"]) for s in shadows])
    out["reference/on_population"] = np.stack([_logits(nets[s], population) for s in shadows])
    if len(shadows) >= 2:
        for j in shadows:
            out[f"{j}/reference_logits"] = np.stack([_logits(nets[s], samples[j]) for s in shadows])
    return out


def _outputs(out: Mapping[str, np.ndarray], role: str) -> ModelOutputs:
    return ModelOutputs(
        logits=out[f"{role}/logits"], labels=out[f"{role}/labels"], member=out[f"{role}/member"].astype(bool),
        sensitivity=out.get(f"{role}/sensitivity"),
    )


def attack_data(outputs: Mapping[str, np.ndarray]) -> AttackData:
    """The :class:`AttackData` of stored model outputs (see :func:`model_outputs`)."""
    if "victim/logits" not in outputs:
        raise ValueError(
            "model_outputs holds no 'victim/logits' (an artefact from before outputs were stored as "
            "logits, or not made by wemem.ml.evaluation.model_outputs); re-run the compute_model_outputs nodes")
    shadows = sorted({k.split("/")[0] for k in outputs if k.startswith("shadow_")}, key=lambda s: int(s.split("_")[1]))
    refs = [outputs.get(f"{s}/reference_logits") for s in shadows]
    return AttackData(
        target=_outputs(outputs, "victim"),
        shadows=[_outputs(outputs, s) for s in shadows],
        reference_on_target=outputs["reference/on_target"],
        target_on_population=outputs["victim/population_logits"],
        reference_on_population=outputs["reference/on_population"],
        population_labels=outputs["population/labels"],
        shadow_references=refs if all(r is not None for r in refs) else None,
    )


# --------------------------------------------------------------------------- the record
RISK_RECORD = {"risky_fraction": "risky_fraction", "n_risky": "n_risky", "tau_threshold": "threshold"}
"""result key → fine-tuning record key: the risky fraction f, the number of risky samples and
the score threshold τ actually selected (rmr, swmr)."""


def shadow_record(data: AttackData, chosen: str, selection: Mapping[str, float]) -> dict[str, float]:
    """What the select step may decide on (no victim membership label): the victim's accuracy
    on its dev data (``dev_acc``), the shadows' mean test accuracy, and the leave-one-shadow-out
    attack metric on the shadows of the chosen attack and of the strongest there (NaN without
    two shadows)."""
    dev = float((data.target_on_population.argmax(1) == data.population_labels).mean())
    tests = [float((s.logits.argmax(1) == s.labels)[~s.member].mean()) for s in data.shadows if (~s.member).any()]
    finite = [v for v in selection.values() if np.isfinite(v)]
    return {"dev_acc": dev, "shadow_test_acc": float(np.mean(tests)) if tests else float("nan"),
            "shadow_chosen_attack": float(selection[chosen]) if chosen in selection else float("nan"),
            "shadow_max_attack": float(max(finite)) if finite else float("nan")}


def attack_record(
    combo: Combo,
    outputs: Mapping[str, np.ndarray],
    finetune_log: Mapping[str, Any],
    *,
    dataset: str,
    model: str,
    settings: MiaEvaluationSettings,
    seed: int,
    device: str | torch.device,
    tau: float | None = None,
    tau_mode: str = "value",
) -> dict[str, Any]:
    """Calibrates/trains each chosen attack on the shadows, scores the victim (SPEC §8) and
    returns the combination's record: its identity (``combo``, ``dataset``, ``model``, the
    ``seed`` of its repeat, defense and settings), status, the victim's accuracies and sample counts (``n_members``,
    ``n_nonmembers``), fine-tuning cost and accountant ε, what τ selected
    (:data:`RISK_RECORD`, rmr/swmr), every attack's metrics (with its
    empirical ε lower bound ``eps_lb`` and, given the victim's memorisation scores, its
    high/low-memorisation slices at ``settings.tau`` or else ``tau``: a score value, or with
    ``tau_mode="fraction"`` the top-τ share of the pool's scores), the attack chosen on the
    shadows (``chosen_attack``, ``selection``: each attack's mean over the folds), the strongest
    on the victim (an upper bound) and every ROC curve thinned to ``settings.roc_points``. A
    combination whose fine-tuning failed gets ``status: failed``, its error and no attacks."""
    meta = finetune_log.get("meta", {})
    victim_log = finetune_log.get("models", finetune_log).get("victim", {})
    result: dict[str, Any] = {
        **combo.as_dict(), "dataset": dataset, "model": model, "seed": int(seed),
        "status": meta.get("status", "ok"), "defense": meta.get("defense", combo.variant),
        "settings": meta.get("settings", {}),
    }
    result["settings_text"] = "; ".join(f"{k}={v}" for k, v in sorted(result["settings"].items()))
    if FAILED in outputs or result["status"] != "ok":
        result.update(status="failed", error=meta.get("error", "fine-tuning failed"), attacks={})
        log.warning("%s: fine-tuning failed, no attacks run (%s)", combo.namespace, result["error"])
        return result
    data = attack_data(outputs)
    kwargs = {"training": settings.attack_model, "device": str(resolve_device(device)), "seed": int(seed)}
    results = run_attacks(data, settings.attacks, settings.attack_settings(), **kwargs)
    member = data.target.member
    correct = data.target.logits.argmax(1) == data.target.labels
    delta = victim_log.get("delta") or settings.audit_delta
    if settings.tau is not None:
        tau = settings.tau
    elif tau is not None and tau_mode == "fraction" and "memscore/pool" in outputs:
        tau = risk_threshold(outputs["memscore/pool"], tau, "fraction")[1]  # the score the top-τ share starts at
    high = None
    if "victim/memscore" in outputs and tau is not None:
        high = np.zeros(member.shape, bool)
        high[member] = np.asarray(outputs["victim/memscore"], dtype=np.float64) >= tau
    attacks = {}
    for name, r in results.items():
        m = {k: float(v) for k, v in r.metrics.items()}
        m["eps_lb"] = epsilon_lower_bound(r.scores, member, delta)
        if high is not None:
            m.update(slice_metrics(r.scores, r.predictions, member, high))
        attacks[name] = m
    chosen, selection = choose_attack(data, settings.attacks, settings.attack_settings(),
                                      metric=settings.choose_by, folds=settings.choose_folds, **kwargs)
    strongest, acc = strongest_attack(attacks)
    shadow_view = shadow_record(data, chosen, selection)
    result.update(
        train_acc=float(correct[member].mean()), test_acc=float(correct[~member].mean()),
        n_members=int(member.sum()), n_nonmembers=int((~member).sum()),
        finetune_seconds=victim_log.get("finetune_seconds", victim_log.get("seconds")),
        final_sparsity=victim_log.get("final_global_sparsity", 0.0),
        epsilon=victim_log.get("epsilon"), delta=float(delta), tau=tau,
        # what τ selected for the victim (rmr, swmr; absent for the other defenses)
        **{k: victim_log[src] for k, src in RISK_RECORD.items() if victim_log.get(src) is not None},
        n_high=int(high.sum()) if high is not None else None,
        attacks=attacks, chosen_attack=chosen, selection=selection, strongest_attack=strongest, **shadow_view,
    )
    result["roc"] = {name: thinned_roc(r.scores, member, settings.roc_points) for name, r in results.items()}
    log.info("%s: victim test acc %.3f, chosen attack %s %.3f (strongest %s %.3f)", combo.namespace,
             result["test_acc"], chosen or "—", attacks[chosen]["balanced_acc"] if chosen else float("nan"),
             strongest, acc)
    return result
