"""The results as a reader sees them, in headless Chromium (issue 15): the HTML report of a run
(answer first, the table, the embedded images, no sideways scrolling on a phone) and the MLflow
UI served from a temporary store (children named by their defense, the parent's description
with the answer, the report and the plots among its artifacts).

Playwright drives the system Chromium (``/usr/bin/chromium``, from the Debian registry:
``apt-get install -y chromium``; ``.ci/run`` installs it); a browser is never downloaded. Without
it the tests are skipped with that reason."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.browser_support import log_store, mlflow_server
from tests.ml.report_fixtures import default_grid

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no system Chromium at /usr/bin/chromium (install it: apt-get install -y chromium; "
                ".ci/run does); the browser tests need it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

pytestmark = pytest.mark.slow
ATTACKS = ["conf", "entr", "mentr", "hconf", "nn", "top3_nn", "ci_nn", "samia", "lira", "rmia"]


@pytest.fixture(scope="module")
def reports():
    from wemem.ml.evaluation import MiaEvaluationSettings
    from wemem.pipelines.mia_evaluation.nodes import build_reports

    results = default_grid()
    return results, build_reports(MiaEvaluationSettings.model_validate({"attacks": ATTACKS}), *results)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium refuses its sandbox
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


def _dismiss_tips(page, timeout_ms: int = 8_000) -> None:
    """Closes the GenAI overview's "Detect Issues" tip when it pops up (it covers the page)."""
    try:
        page.get_by_role("button", name="Got it").click(timeout=timeout_ms)
    except sync_api.TimeoutError:
        pass


def _click_past_tips(page, locator, timeout_s: float = 90.0) -> None:
    """Clicks ``locator``; a tip or dialog that pops up late (on a loaded machine, after
    ``_dismiss_tips`` gave up) and takes the pointer is closed, and the click tried again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            locator.click(timeout=5_000)
            return
        except sync_api.TimeoutError:
            if time.monotonic() > deadline:
                raise
            _dismiss_tips(page, 1_000)
            page.keyboard.press("Escape")


def _images_loaded(page) -> list[int]:
    return page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")


@pytest.mark.parametrize("width", [1280, 390])  # a laptop and a phone
def test_report_shows_the_answer_table_and_images(tmp_path, reports, browser, width):
    path = tmp_path / "report.html"
    path.write_text(reports[1]["report_html"], encoding="utf-8")
    context = browser.new_context(viewport={"width": width, "height": 900}, offline=True)  # no network needed
    page = context.new_page()
    page.goto(path.as_uri())
    answer = page.locator("#answer")
    assert answer.is_visible()
    assert "RSW (l1_unstructured @ 60%) is the best defense" in answer.inner_text()
    # the answer is the first thing on the page: its top is within the first screen
    assert answer.bounding_box()["y"] < 400
    rows = page.locator("#comparison tbody tr")
    assert rows.count() == 10
    assert page.locator("#comparison tr.best").inner_text().startswith("l1_unstructured @ 60%")
    widths = _images_loaded(page)
    assert len(widths) == 3 and all(w > 300 for w in widths)
    # nothing wider than the screen: only the table scrolls, inside its own box
    assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
    for img in page.locator("img").all():
        assert img.bounding_box()["width"] <= width
    context.close()


def test_mlflow_ui_leads_with_the_defense_and_the_answer(tmp_path, reports, browser):
    results, report_set = reports
    store = log_store(tmp_path, results, report_set)
    with mlflow_server(store["uri"], tmp_path) as base:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        # the runs list of the experiment, in the UI's "Model training" mode (it opens in GenAI)
        page.goto(f"{base}/#/experiments/{store['experiment_id']}")
        _dismiss_tips(page)
        _click_past_tips(page, page.get_by_text("Model training", exact=True).first)
        parent = page.get_by_text("mnist1d · best: rsw", exact=False).first
        parent.wait_for(timeout=60_000)
        page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()  # expand the parent
        for name in ("rsw · l1_unstructured 60%", "one_shot · l1_unstructured 60%", "unpruned"):
            page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
        # the parent's page: the description holds the answer; its metrics the numbers
        page.goto(f"{base}/#/experiments/{store['experiment_id']}/runs/{store['parent_id']}")
        page.get_by_text("is the best defense within a 2-point accuracy budget", exact=False).first.wait_for(
            timeout=60_000)
        assert page.get_by_text("best_chosen_attack_acc").first.is_visible()
        # its artifacts: a plot renders as an image, the report renders in the viewer's frame
        page.goto(f"{base}/#/experiments/{store['experiment_id']}/runs/{store['parent_id']}/artifacts")
        page.get_by_text("privacy_utility_plot.png").first.click(timeout=60_000)
        page.wait_for_function("Array.from(document.images).some(i => i.complete && i.naturalWidth > 300)",
                               timeout=30_000)
        page.get_by_text("report_html.html").first.click()
        frame = page.frame_locator("iframe").first
        frame.locator("#answer").wait_for(timeout=30_000)
        assert "best defense" in frame.locator("#answer").inner_text()
        assert frame.locator("#comparison tbody tr").count() == 10
        page.close()
