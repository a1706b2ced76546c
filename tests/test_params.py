"""wemem.params: the shipped parameters validate; every bad input gives one clear message."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest

from wemem.ml.defenses import DEFENSES, Base, resolve_settings
from wemem.ml.schema import PosInt
from wemem.params import ParameterError, ValidatedParams, validate_parameters

CONF = Path(__file__).resolve().parents[1] / "conf"


def load_parameters(env: str | None = None, **runtime_params) -> dict:
    from kedro.config import OmegaConfigLoader

    from wemem.settings import CONFIG_LOADER_ARGS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # omegaconf's resolver deprecation notice
        loader = OmegaConfigLoader(conf_source=str(CONF), env=env, runtime_params=runtime_params, **CONFIG_LOADER_ARGS)
        return loader["parameters"]


@pytest.fixture(scope="module")
def shipped() -> dict:
    return load_parameters()


@pytest.fixture
def params(shipped) -> dict:
    return copy.deepcopy(shipped)


def problems_of(params: dict) -> list[str]:
    with pytest.raises(ParameterError) as info:
        validate_parameters(params)
    assert str(info.value).startswith(f"{len(info.value.problems)} problem(s) in the parameters")
    return info.value.problems


def set_key(params: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        params = params[key]
    params[last] = value


# --------------------------------------------------------------------------- shipped parameters
def test_shipped_base_parameters_validate(shipped):
    validated = validate_parameters(shipped)
    assert isinstance(validated, ValidatedParams)
    assert validated.dataset == shipped["dataset"]
    assert validated.memscore.m == shipped["memscore"]["m"]
    assert validated.defenses["rsw"]["order"] == "l2h"


@pytest.mark.parametrize("dataset", sorted(load_parameters()["datasets"]))
def test_shipped_parameters_validate_for_every_dataset(dataset):
    params = load_parameters(dataset=dataset)
    assert validate_parameters(params).dataset == dataset


@pytest.mark.skipif(not (CONF / "paper").is_dir(), reason="no conf/paper")
def test_paper_environment_validates():
    validate_parameters(load_parameters(env="paper"))


def test_every_shipped_variant_parses_with_its_defense_schema(shipped):
    defaults = shipped["datasets"][shipped["dataset"]]["defense_defaults"]
    for variant, conf in shipped["defenses"].items():
        settings = resolve_settings(conf.get("defense", variant), conf, defaults)
        assert isinstance(settings, DEFENSES[conf.get("defense", variant)].settings), variant
    assert resolve_settings("rsw", shipped["defenses"]["rsw"], defaults).w == defaults["w"]


# --------------------------------------------------------------------------- one bad value each
INT_GE1, FRACTION, UNIT, NONNEG = "an integer >= 1", "a number in (0, 1)", "a number in [0, 1]", "a number >= 0"
DEVICE = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"

BAD = [
    # (key to set, value, path in the message, bad value in the message, allowed values in the message)
    ("dataset", "mnsit1d", "dataset", "mnsit1d", "'mnist1d', 'location'"),
    ("datasets.mnist1d.model", "resnet19", "datasets.mnist1d.model", "resnet19", "'column_fc', 'resnet18'"),
    ("pruning_defense.grid.defenses", ["base", "rsx"], "pruning_defense.grid.defenses[1]", "rsx", "'rsw', 'rsw_h2l'"),
    ("defenses.rsw.defense", "rsww", "defenses.rsw.defense", "rsww", "'base', 'rsw', 'rmr'"),
    ("defenses.ppb.theta", 1.0, "defenses.ppb.theta", 1.0, "['lam', 'lambda_g']"),
    ("pruning_defense.grid.methods", ["l1_unstructured", "l3_structured"], "pruning_defense.grid.methods[1]",
     "l3_structured", "'l1_unstructured', 'l1_structured', 'l2_structured'"),
    ("pruning_defense.grid.sparsities", [0.5, 1.0], "pruning_defense.grid.sparsities[1]", 1.0, "a number in [0, 1)"),
    ("pruning_defense.grid.sparsities", [-0.1], "pruning_defense.grid.sparsities[0]", -0.1, "a number in [0, 1)"),
    ("pruning_defense.n_iter", 0, "pruning_defense.n_iter", 0, INT_GE1),
    ("datasets.mnist1d.defense_defaults.w", 0, "datasets.mnist1d.defense_defaults.w", 0, INT_GE1),
    ("datasets.cifar10.defense_defaults.s", -5, "datasets.cifar10.defense_defaults.s", -5, INT_GE1),
    ("defenses.rsw.w", 0, "defenses.rsw.w", 0, INT_GE1),
    ("defenses.swmr.s", 0, "defenses.swmr.s", 0, INT_GE1),
    ("datasets.location.defense_defaults.tau", 1.5, "datasets.location.defense_defaults.tau", 1.5, UNIT),
    ("defenses.rmr.tau", -0.1, "defenses.rmr.tau", -0.1, UNIT),
    ("defenses.base.lambda_g", -0.0005, "defenses.base.lambda_g", -0.0005, NONNEG),
    ("defenses.rmr.lambda_r", -0.1, "defenses.rmr.lambda_r", -0.1, NONNEG),
    ("defenses.ppb.lam", -4.0, "defenses.ppb.lam", -4.0, NONNEG),
    ("defenses.adv.theta", -2.0, "defenses.adv.theta", -2.0, NONNEG),
    ("defenses.dpsgd.sigma", -0.1, "defenses.dpsgd.sigma", -0.1, NONNEG),
    ("defenses.dpsgd.clip", 0.0, "defenses.dpsgd.clip", 0.0, "a number > 0"),
    ("defenses.rmr.tau_mode", "values", "defenses.rmr.tau_mode", "values", "['value', 'fraction']"),
    ("defenses.swmr.order", "h2m", "defenses.swmr.order", "h2m", "['h2l', 'l2h']"),
    ("memscore.subset_fraction", 1.0, "memscore.subset_fraction", 1.0, FRACTION),
    ("memscore.subset_fraction", 0, "memscore.subset_fraction", 0, FRACTION),
    ("memscore.m", 1, "memscore.m", 1, "an integer >= 2"),
    ("memscore.n_shards", 0, "memscore.n_shards", 0, INT_GE1),
    ("memscore.n_shards", 33, "memscore.n_shards", 33, "an integer in [1, 32]"),
    ("datasets.location.n_shadows", 0, "datasets.location.n_shadows", 0, INT_GE1),
    ("memscore.estimator", "probabilty", "memscore.estimator", "probabilty", "['correctness', 'probability']"),
    ("data_ingestion.split.train_pool_fraction", 1.0, "data_ingestion.split.train_pool_fraction", 1.0, FRACTION),
    ("data_ingestion.split.dev_fraction", 0, "data_ingestion.split.dev_fraction", 0, FRACTION),
    ("mia_evaluation.attacks", ["conf", "lira2"], "mia_evaluation.attacks[1]", "lira2", "'lira', 'rmia'"),
    ("training.epochs", 0, "training.epochs", 0, INT_GE1),
    ("training.epochs", 2.5, "training.epochs", 2.5, INT_GE1),
    ("training.patience", 0, "training.patience", 0, INT_GE1),
    ("training.batch_size", -128, "training.batch_size", -128, INT_GE1),
    ("pruning_defense.finetune.epochs", 0, "pruning_defense.finetune.epochs", 0, INT_GE1),
    ("pruning_defense.finetune.patience", -1, "pruning_defense.finetune.patience", -1, INT_GE1),
    ("pruning_defense.finetune.batch_size", 0, "pruning_defense.finetune.batch_size", 0, INT_GE1),
    ("memscore.epochs", 0, "memscore.epochs", 0, INT_GE1),
    ("memscore.batch_size", 0, "memscore.batch_size", 0, INT_GE1),
    ("mia_evaluation.attack_model.epochs", 0, "mia_evaluation.attack_model.epochs", 0, INT_GE1),
    ("mia_evaluation.attack_model.batch_size", 0, "mia_evaluation.attack_model.batch_size", 0, INT_GE1),
    ("device", "gpu", "device", "gpu", DEVICE),
    ("device", "cuda:x", "device", "cuda:x", DEVICE),
    ("device", "CUDA", "device", "CUDA", DEVICE),
    ("data_ingestion.download", "maybe", "data_ingestion.download", "maybe", "true or false"),
]


@pytest.mark.parametrize(("key", "value", "path", "bad", "allowed"), BAD, ids=[f"{c[0]}={c[1]!r}" for c in BAD])
def test_bad_value_is_reported_with_path_value_and_allowed(params, key, value, path, bad, allowed):
    set_key(params, key, value)
    problems = problems_of(params)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path} = {bad!r}: "), problems[0]
    assert allowed in problems[0].split("; allowed: ", 1)[1], problems[0]


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [("dataset", "mnsit1d", "mnist1d"), ("datasets.mnist1d.model", "colum_fc", "column_fc"),
     ("memscore.estimator", "probabilty", "probability"), ("pruning_defense.grid.defenses", ["relaxlos"], "relaxloss")],
)
def test_unknown_name_suggests_the_close_match(params, key, value, match):
    set_key(params, key, value)
    assert f"did you mean {match!r}?" in problems_of(params)[0]


# --------------------------------------------------------------------------- unknown and missing keys
@pytest.mark.parametrize(
    ("section", "typo", "value", "match", "reason"),
    [("memscore", "subset_fracton", 0.5, "subset_fraction", "unknown key 'subset_fracton'"),
     ("training", "epoch", 10, "epochs", "unknown key 'epoch'"),
     ("defenses.rsw", "lamda_g", 0.1, "lambda_g", "not a setting of defense 'rsw'"),  # rsw's own schema
     ("data_ingestion.split", "dev_fracton", 0.3, "dev_fraction", "unknown key 'dev_fracton'"),
     ("pruning_defense.grid", "sparsity", [0.5], "sparsities", "unknown key 'sparsity'")],
)
def test_typo_key_names_the_close_match(params, section, typo, value, match, reason):
    set_key(params, f"{section}.{typo}", value)
    problems = problems_of(params)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{section}.{typo} = {value!r}: {reason}; allowed: ")
    assert match in problems[0].split("; allowed: ", 1)[1]
    assert problems[0].endswith(f"did you mean {match!r}?")


def test_typo_in_dataset_name_key(params):
    params["datasets"]["cifar1O"] = params["datasets"].pop("cifar10")
    [problem] = problems_of(params)
    assert problem.startswith("datasets.cifar1O = 'cifar1O': unknown dataset; allowed: ")
    assert problem.endswith("did you mean 'cifar10'?")


def test_typo_in_loader_option(params):
    params["datasets"]["mnist1d"]["loader"]["num_sample"] = 3000
    [problem] = problems_of(params)
    assert problem == ("datasets.mnist1d.loader.num_sample = 3000: not an option of the mnist1d loader; "
                       "allowed: ['num_samples', 'seed']; did you mean 'num_samples'?")


def test_missing_key_says_what_is_required(params):
    del params["training"]["epochs"]
    del params["datasets"]["texas100"]["defense_defaults"]["tau"]
    assert problems_of(params) == [
        "datasets.texas100.defense_defaults.tau: missing; required: a number in [0, 1]",
        "training.epochs: missing; required: an integer >= 1",
    ]


def test_top_level_section_typo_shows_as_missing_section(params):
    params["memscroe"] = params.pop("memscore")
    [problem] = problems_of(params)
    assert problem.startswith("memscore: missing; required: a mapping with keys m, subset_fraction")


def test_unknown_top_level_keys_are_ignored(params):
    params["my_notes"] = {"anything": [1, 2, 3]}
    validate_parameters(params)


def test_section_of_the_wrong_type(params):
    params["memscore"] = 5
    assert problems_of(params) == ["memscore = 5: not a mapping; allowed: a mapping of keys to values"]


# --------------------------------------------------------------------------- relations between keys
def test_dataset_without_an_entry_under_datasets(params):
    params["dataset"] = "cifar10"
    del params["datasets"]["cifar10"]
    [problem] = problems_of(params)
    assert problem.startswith("dataset = 'cifar10': no entry under 'datasets'; allowed: ['mnist1d', 'location'")


def test_variant_without_defense_key_must_be_named_after_a_defense(params):
    params["defenses"]["strong"] = {"lambda_g": 0.01}
    [problem] = problems_of(params)
    assert problem.startswith("defenses.strong = {'lambda_g': 0.01}: no 'defense' key and the name is not a defense")
    assert "'relaxloss'" in problem


def test_variant_named_after_a_defense_needs_no_defense_key(params):
    params["defenses"]["ppb"] = {"lam": 2.0}
    validate_parameters(params)


def test_order_is_normalised_like_the_defenses_do(params):
    params["defenses"]["rsw"]["order"] = "H2L"
    validate_parameters(params)
    defaults = params["datasets"]["mnist1d"]["defense_defaults"]
    assert resolve_settings("rsw", params["defenses"]["rsw"], defaults).order == "h2l"


def test_repeated_grid_cells_are_reported(params):
    params["pruning_defense"]["grid"]["sparsities"] = [0.6, 0.601]
    params["pruning_defense"]["grid"]["defenses"] = ["base", "rsw", "base"]
    assert problems_of(params) == [
        "pruning_defense.grid.sparsities[1] = 0.601: repeats 0.6 (same namespace); "
        "allowed: distinct values (by whole percent)",
        "pruning_defense.grid.defenses[2] = 'base': repeats 'base' (same namespace); allowed: distinct values",
    ]


def test_one_shot_reference_needs_the_base_variant(params):
    params["defenses"].pop("base")
    params["pruning_defense"]["grid"]["defenses"].remove("base")
    assert problems_of(params) == [
        "pruning_defense.reference.one_shot = True: the one-shot reference fine-tunes with the 'base' variant, "
        "which 'defenses' lacks; allowed: false, or define defenses.base"
    ]
    params["pruning_defense"]["reference"]["one_shot"] = False
    validate_parameters(params)


@pytest.fixture
def needy():
    """A toy defense registered for one test: it needs ``w`` and a ``gain`` nobody sets."""

    @DEFENSES.register("needy")
    class Needy(Base):
        name = "needy"

        class Settings(Base.Settings):
            w: PosInt

    yield Needy
    DEFENSES.remove("needy")


def test_required_setting_missing_from_variant_and_defaults(params, needy):
    params["defenses"]["needy"] = {"defense": "needy"}
    params["pruning_defense"]["grid"]["defenses"] = ["needy"]
    validate_parameters(params)  # w comes from datasets.mnist1d.defense_defaults

    class Gainful(Base.Settings):
        gain: PosInt

    needy.Settings = Gainful
    DEFENSES.register("needy")(needy)
    [problem] = problems_of(params)
    assert problem == ("defenses.needy = {'defense': 'needy'}: defense 'needy' needs setting 'gain', set neither "
                       "here nor in datasets.mnist1d.defense_defaults; allowed: add 'gain' to either")


# --------------------------------------------------------------------------- all at once
def test_several_problems_are_all_reported(params):
    params["dataset"] = "mnsit1d"
    params["pruning_defense"]["grid"]["sparsities"] = [0.5, 1.2]
    params["memscore"]["subset_fracton"] = 0.7
    params["defenses"]["rsw"]["lam"] = 1.0
    params["pruning_defense"]["grid"]["defenses"].append("rsx")
    params["device"] = "gpu"
    with pytest.raises(ParameterError) as info:
        validate_parameters(params)
    assert isinstance(info.value, ValueError)
    problems = info.value.problems
    assert len(problems) == 6, problems
    for start in ("dataset = 'mnsit1d'", "pruning_defense.grid.sparsities[1] = 1.2", "memscore.subset_fracton = 0.7",
                  "defenses.rsw.lam = 1.0", "pruning_defense.grid.defenses[8] = 'rsx'", "device = 'gpu'"):
        assert any(p.startswith(start) for p in problems), start
        assert start in str(info.value)
    assert str(info.value).startswith("6 problem(s) in the parameters")


def test_not_a_mapping():
    with pytest.raises(ParameterError, match="parameters = 'oops': not a mapping"):
        validate_parameters("oops")
