"""The HTML report and its answer, the readable plots, and the MLflow naming (issue 15).

Known answers: the synthetic rows of ``report_fixtures.default_grid`` are written by hand
(Base 78% test / 68% attack at l1_unstructured 60%, ...), so the best defense within each budget
is read off the list, not computed by the code under test."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from tests.ml.report_fixtures import default_grid, fake_result
from wemem.ml.evaluation import MiaEvaluationSettings
from wemem.ml.report_html import ReportSettings, answer, answer_metrics, render_report, software_versions
from wemem.ml.reporting import (
    _pareto,
    chosen_roc_by_combination,
    comparison_table,
    plot_chosen_roc,
    plot_privacy_utility,
    plot_roc_curves,
)
from wemem.ml.results import child_params, child_run_name, child_tags

ATTACKS = ["conf", "entr", "mentr", "hconf", "nn", "top3_nn", "ci_nn", "samia", "lira", "rmia"]


@pytest.fixture(scope="module")
def table():
    return comparison_table(default_grid())


# ---------------------------------------------------------------------------- answer
@pytest.mark.parametrize("budget,defense,attack,test", [
    (0.02, "rsw", 0.60, 0.775),        # floor 0.76: swmr (0.75), adv, dpsgd are over budget
    (0.03, "swmr", 0.55, 0.75),        # floor 0.75 admits swmr exactly (on the boundary)
    (0.0, "relaxloss", 0.64, 0.79),    # floor 0.78: base .68, ppb .66, relaxloss .64
    (0.2, "dpsgd", 0.50, 0.60),        # everything qualifies: the lowest attack accuracy wins
])
def test_answer_picks_the_lowest_attack_within_the_budget(table, budget, defense, attack, test):
    ans = answer(table, budget)
    assert ans["best"]["defense"] == defense
    assert ans["best"]["attack_acc"] == pytest.approx(attack)
    assert ans["best"]["test_acc"] == pytest.approx(test)
    assert ans["baseline"]["defense"] == "base" and ans["baseline"]["attack_acc"] == pytest.approx(0.68)
    assert ans["acc_drop"] == pytest.approx(0.78 - test)
    assert ans["attack_reduction"] == pytest.approx(0.68 - attack)
    assert defense.upper() in ans["text"] and f"{100 * attack:.1f}%" in ans["text"]
    # references are never candidates
    assert not {c["defense"] for c in ans["candidates"]} & {"unpruned", "one_shot"}


def test_answer_says_when_no_defense_beats_base():
    rows = [fake_result("base", 0.80, 0.60), fake_result("rsw", 0.80, 0.65), fake_result("adv", 0.60, 0.50)]
    ans = answer(comparison_table(rows), 0.02)
    assert ans["best"]["defense"] == "base"
    assert ans["text"].startswith("No defense beats Base")
    assert [r["defense"] for r in ans["over_budget"]] == ["adv"]


def test_answer_without_a_base_row_gives_no_answer():
    ans = answer(comparison_table([fake_result("rsw", 0.8, 0.6), fake_result("unpruned", 0.8, 0.7, method=None,
                                                                              sparsity=None)]), 0.02)
    assert ans["best"] is None and ans["text"].startswith("No answer")


def test_answer_averages_over_seeds():
    # rsw: attack (0.60 + 0.64) / 2 = 0.62, test (0.775 + 0.765) / 2 = 0.77; base: 0.68 / 0.78 both seeds
    rows = []
    for ra, rt in [(0.60, 0.775), (0.64, 0.765)]:
        rows += [fake_result("base", 0.78, 0.68), fake_result("rsw", rt, ra)]
    table = comparison_table(rows)
    table["seed"] = [0, 0, 1, 1]  # rows keep their order: base, rsw of seed 0, then of seed 1
    ans = answer(table, 0.02)
    assert ans["best"]["defense"] == "rsw" and ans["best"]["n_seeds"] == 2
    assert ans["best"]["attack_acc"] == pytest.approx(0.62)
    assert ans["best"]["test_acc"] == pytest.approx(0.77)
    assert ans["best"]["attack_acc_std"] == pytest.approx(np.std([0.60, 0.64], ddof=1))
    assert "mean of 2 seeds" in ans["text"]


def test_answer_metrics_are_the_answers_numbers(table):
    m = answer_metrics(answer(table, 0.02))
    assert m == pytest.approx({"max_acc_drop": 0.02, "best_chosen_attack_acc": 0.60, "best_test_acc": 0.775,
                               "base_chosen_attack_acc": 0.68, "base_test_acc": 0.78,
                               "unpruned_chosen_attack_acc": 0.70, "unpruned_test_acc": 0.80})


def test_report_settings_schema():
    assert MiaEvaluationSettings.model_validate({"attacks": ["conf"]}).report.max_acc_drop == 0.02
    assert MiaEvaluationSettings.model_validate(
        {"attacks": ["conf"], "report": {"max_acc_drop": 0.05}}).report.max_acc_drop == 0.05
    with pytest.raises(ValidationError, match="max_acc_drp"):
        MiaEvaluationSettings.model_validate({"attacks": ["conf"], "report": {"max_acc_drp": 0.05}})
    with pytest.raises(ValidationError):
        ReportSettings(max_acc_drop=-0.1)


# ---------------------------------------------------------------------------- the page
def test_report_page_leads_with_the_answer_and_embeds_its_images(table):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [0, 1])
    ans = answer(table, 0.02)
    page = render_report(table, ans, {"pu": ("the plot", fig)}, time_cost=pd.DataFrame({"defense": ["rsw"], "s": [1.5]}),
                         settings={"seed": 0}, versions=software_versions(("numpy",)))
    assert page.startswith("<!DOCTYPE html>") and 'name="viewport"' in page
    # the answer comes before the table, the table before the figures
    assert page.index(ans["text"].replace("'", "&#x27;")) < page.index('id="comparison"') < page.index('id="fig-pu"')
    # ten rows, the answer's row marked
    body = page[page.index('id="comparison"'):page.index("</table>", page.index('id="comparison"'))]
    assert body.count("<tr class=") == 10 and body.count('class="best"') == 1
    # images are embedded PNGs, nothing is fetched from the network
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == 1 and base64.b64decode(uris[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    blob = re.search(r'<script type="application/json" id="wemem-answer">(.*?)</script>', page, re.S).group(1)
    assert json.loads(blob)["best"]["defense"] == "rsw"
    assert f"numpy</td><td class=\"l\">{np.__version__}" in page


# ---------------------------------------------------------------------------- plots
def test_pareto_frontier_known_points():
    pts = [(0.5, 0.6), (0.55, 0.75), (0.6, 0.7), (0.6, 0.78), (0.7, 0.78), (0.7, 0.8)]
    # (0.6, 0.7) is beaten by (0.55, 0.75); (0.7, 0.78) by (0.6, 0.78)
    assert _pareto(pts) == [(0.5, 0.6), (0.55, 0.75), (0.6, 0.78), (0.7, 0.8)]


def _renderer(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return FigureCanvasAgg(fig).get_renderer()


def test_privacy_utility_references_frontier_and_labels_that_do_not_collide(table):
    fig = plot_privacy_utility(table)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "unpruned (reference)" in legend and "one-shot pruning (reference)" in legend
    assert "Pareto frontier (defenses)" in legend
    texts = [a for a in ax.texts]
    assert {t.get_text() for t in texts} >= {"unpruned", "one_shot", "rsw", "rmr", "swmr"}
    r = _renderer(fig)
    boxes = [t.get_window_extent(r) for t in texts]
    overlaps = [(texts[i].get_text(), texts[j].get_text()) for i in range(len(boxes)) for j in range(i)
                if boxes[i].overlaps(boxes[j])]
    assert not overlaps


def test_privacy_utility_draws_error_bars_over_seeds():
    rows = [fake_result("base", 0.78, 0.68), fake_result("rsw", 0.775, 0.60),
            fake_result("base", 0.76, 0.66), fake_result("rsw", 0.765, 0.64)]
    table = comparison_table(rows)
    plain = plot_privacy_utility(table)
    assert not [c for c in plain.axes[0].containers if "ErrorbarContainer" in type(c).__name__]
    table["seed"] = [0, 0, 1, 1]
    fig = plot_privacy_utility(table)
    bars = [c for c in fig.axes[0].containers if "ErrorbarContainer" in type(c).__name__]
    assert len(bars) >= 2
    # the rsw point is at the mean over seeds: attack (0.60 + 0.64) / 2, test (0.775 + 0.765) / 2
    rsw = [t for t in fig.axes[0].texts if t.get_text() == "rsw"][0]
    assert rsw.xy == pytest.approx((0.62, 0.77))


def test_chosen_roc_one_panel_with_auc_and_tpr_in_the_legend():
    results = default_grid()
    curves = chosen_roc_by_combination(results)
    assert [c["attack"] for c in curves] == ["conf"] * 10
    fig = plot_chosen_roc(curves)
    [ax] = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == 10
    # conf at attack accuracy 0.6 (rsw): p = 0.4/0.6, AUC = 1/(p+1) = 0.6, TPR@1% = 0.01^p
    rsw = [s for s in labels if s.startswith("rsw ")][0]
    assert "AUC 0.60" in rsw and f"TPR@1% {100 * 0.01 ** (0.4 / 0.6):.1f}%" in rsw
    assert ax.get_xlim()[0] == pytest.approx(1 / 400) and ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_child_roc_figure_keeps_its_legend_inside_the_saved_image(tmp_path):
    r = fake_result("rsw", 0.775, 0.60)
    fig = plot_roc_curves({"rsw": r["roc"]}, {"rsw": 1 / 400}, {"rsw": r["attacks"]})
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays the figure out as savefig does (MLflow's log_figure)
    renderer = canvas.get_renderer()
    legend = fig.axes[0].get_legend()
    assert len(legend.get_texts()) == 10
    box = legend.get_window_extent(renderer)
    width, height = fig.bbox.width, fig.bbox.height
    assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width + 1 and box.y1 <= height + 1


# ---------------------------------------------------------------------------- MLflow naming
def test_child_runs_lead_with_the_defense_and_tag_references():
    rsw, one_shot = fake_result("rsw", 0.8, 0.6), fake_result("one_shot", 0.8, 0.6)
    unpruned = fake_result("unpruned", 0.8, 0.6, method=None, sparsity=None)
    assert child_run_name(rsw) == "rsw · l1_unstructured 60%"
    assert child_run_name(one_shot) == "one_shot · l1_unstructured 60%"
    assert child_run_name(unpruned) == "unpruned"
    assert child_tags(rsw) == {"wemem.defense": "rsw", "wemem.pruning": "l1_unstructured 60%",
                               "wemem.reference": "false"}
    assert child_tags(one_shot)["wemem.reference"] == "true" and child_tags(unpruned)["wemem.reference"] == "true"
    # the one-shot row fine-tunes with Base but does not read "base"
    assert child_params(one_shot, 0)["defense"] == "one_shot"
    assert child_params(rsw, 0)["defense"] == "rsw"


def test_parent_summary_describes_the_answer(table):
    from wemem.ml.report_html import parent_summary

    tags, metrics = parent_summary(table, 0.02, "mnist1d · __default__ · 2026-12-01T23.44")
    assert tags["wemem.best_defense"] == "rsw"
    assert tags["mlflow.runName"] == "mnist1d · best: rsw · __default__ · 2026-12-01T23.44"
    assert tags["mlflow.note.content"].startswith("**RSW (l1_unstructured @ 60%) is the best defense")
    assert metrics["best_chosen_attack_acc"] == pytest.approx(0.60)


def test_failed_combination_is_a_row_of_the_page_not_a_candidate():
    rows = default_grid()
    rows[3] = fake_result("rsw", 0.5, 0.5, status="failed") | {"error": "boom: out of memory"}
    table = comparison_table(rows)
    ans = answer(table, 0.02)
    assert ans["best"]["defense"] == "rmr"  # rsw (the answer before) failed: next lowest within budget
    page = render_report(table, ans, {})
    assert "FAILED: boom: out of memory" in page


def test_reports_of_a_run_where_every_combination_failed():
    from wemem.pipelines.mia_evaluation.nodes import build_reports

    rows = [fake_result(v, 0.5, 0.5, status="failed") | {"error": "x"} for v in ("base", "rsw")]
    out = build_reports(MiaEvaluationSettings.model_validate({"attacks": ATTACKS}), *rows)
    assert "No answer" in out["report_html"] and out["report_html"].count("FAILED: x") == 2


def test_page_shows_the_selection_next_to_the_oracle(table):
    selection = {"settings": {"max_acc_drop": 0.02, "reference": "base", "utility": "dev_acc",
                              "privacy": "shadow_max_attack", "victim_metric": "max_attack_acc"},
                 "groups": [{"pruning_method": "l1_unstructured", "sparsity": 0.6,
                             "chosen": {"variant": "rmr", "victim": {"test_acc": 0.75, "chosen_acc": 0.61,
                                                                     "max_attack_acc": 0.655}},
                             "oracle": {"variant": "swmr", "victim": {"test_acc": 0.74, "chosen_acc": 0.6,
                                                                      "max_attack_acc": 0.63}},
                             "gap": 0.025}]}
    page = render_report(table, answer(table, 0.02), {}, selection=selection)
    section = page[page.index('id="selection"'):page.index("<h2>Comparison</h2>")]
    assert "rmr: test 75.0%, chosen attack 61.0%, max attack 65.5%" in section
    assert "swmr: test 74.0%" in section and "<td>2.5</td>" in section
    assert page.index('id="answer"') < page.index('id="selection"')
    assert 'id="selection"' not in render_report(table, answer(table, 0.02), {})
