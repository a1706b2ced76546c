"""A new defense and a new attack are one registration plus a conf entry: validation, the grid,
the comparison table and the MLflow child runs pick them up with no other file changed."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch.nn.functional as F

from tests.conftest import TINY_PARAMS, make_project, run_session
from wemem.ml.attacks import ATTACKS, AttackContext
from wemem.ml.attacks.base import make_result
from wemem.ml.defenses import DEFENSES, Base
from wemem.ml.schema import NonNeg, Section
from wemem.params import ParameterError

pytestmark = pytest.mark.slow


@pytest.fixture
def toys():
    """A label-smoothing defense and a loss-threshold attack, registered as a new module would."""

    @DEFENSES.register("smooth", label="Smooth", family="regulariser")
    class Smooth(Base):
        name = "smooth"

        class Settings(Base.Settings):
            smoothing: NonNeg = 0.1

        def loss(self, model, logits, y, idx, epoch):
            return F.cross_entropy(logits.float(), y, label_smoothing=self.smoothing)

    class LossSettings(Section):
        floor: NonNeg = 1e-12

    @ATTACKS.register("loss", label="Loss", family="metric", settings=LossSettings)
    def loss_attack(data, ctx: AttackContext):
        p = data.target.probs[np.arange(len(data.target)), data.target.labels]
        score = np.log(p + ctx.settings.floor)  # minus the loss: higher = more likely member
        return make_result("loss", score, score >= np.median(score), data)

    yield
    DEFENSES.remove("smooth")
    ATTACKS.remove("loss")


def _params(**grid) -> dict:
    params = copy.deepcopy(TINY_PARAMS)
    params["defenses"] = {"smooth": {"defense": "smooth", "smoothing": 0.2}}
    params["pruning_defense"] |= {"grid": {"methods": ["l1_unstructured"], "sparsities": [0.5],
                                           "defenses": ["base", "smooth"], **grid},
                                  "reference": {"unpruned": False, "one_shot": False}}
    params["mia_evaluation"] |= {"attacks": ["conf", "loss"], "loss": {"floor": 1e-9}}
    return params


def test_toy_defense_and_attack_run_end_to_end(tmp_path, toys):
    from mlflow.tracking import MlflowClient

    project = make_project(tmp_path / "proj")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        bad = _params()
        bad["defenses"]["smooth"]["smoothing"] = -1
        with pytest.raises(ParameterError, match=r"defenses\.smooth\.smoothing = -1: out of range"):
            run_session(project, runtime_params=bad)
        run_session(project, runtime_params=_params())

    reporting = project / "data" / "08_reporting" / "defense_comparison.csv"
    [version] = list(reporting.iterdir())
    table = pd.read_csv(version / "defense_comparison.csv")
    assert list(table["defense"]) == ["base", "smooth"]
    assert table["loss_acc"].between(0, 1).all() and table["conf_acc"].between(0, 1).all()
    assert table.loc[table["defense"] == "smooth", "settings"].item() == "smoothing=0.2"

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("wemem")
    children = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])
                if "mlflow.parentRunId" in r.data.tags}
    # child runs lead with the defense (the namespace is a tag)
    assert set(children) == {"base · l1_unstructured 50%", "smooth · l1_unstructured 50%"}
    smooth = children["smooth · l1_unstructured 50%"]
    assert smooth.data.tags["wemem.namespace"] == "l1_unstructured_s50.smooth"
    assert smooth.data.tags["wemem.reference"] == "false"
    assert smooth.data.params["defense.smoothing"] == "0.2"
    assert 0 <= smooth.data.metrics["loss_balanced_acc"] <= 1
