"""One self-contained HTML page per run: the question and its answer first, then the evidence.

:func:`render_report` lays out the answer (:func:`wemem.ml.answer.answer`, re-exported here),
the comparison table, the figures (PNG, embedded as base64: the page needs no network), the time
cost, the settings and the software versions on a page that reads on a phone's width. No Kedro here: the pipeline node only passes things in.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import pandas as pd

from .answer import REFERENCES, ReportSettings, _f, _means, _setting, answer, answer_metrics, parent_summary
from .attacks import ATTACKS

__all__ = ["ReportSettings", "answer", "answer_metrics", "parent_summary", "render_report", "run_settings",
           "software_versions", "REFERENCES"]


def software_versions(packages: Sequence[str] = ("wemem", "torch", "numpy", "pandas", "scikit-learn", "opacus",
                                                 "matplotlib", "kedro", "kedro-viz", "mlflow")) -> dict[str, str]:
    """Python's and each installed package's version (``not installed`` for a missing one)."""
    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_settings(table: pd.DataFrame, mia: Mapping[str, Any]) -> dict[str, Any]:
    """What ran, for the report: datasets and models, pruning settings, seeds, each defense's
    settings (the table's ``settings`` column), τ and the evaluation settings."""
    out: dict[str, Any] = {
        "datasets": sorted({f"{d} / {m}" for d, m in zip(table["dataset"], table["model"])}),
        "pruning": sorted({_setting(r) for _, r in table.iterrows()}),
        "defenses": {},
        "mia_evaluation": dict(mia),
    }
    if "seed" in table:
        out["seeds"] = sorted({int(s) for s in table["seed"].dropna()})
    if "tau" in table:
        out["tau"] = sorted({float(t) for t in table["tau"].dropna()})
    if "settings" in table:
        for _, r in table.iterrows():
            text = r.get("settings")
            if isinstance(text, str) and text:
                out["defenses"].setdefault(r["defense"], text)
    return out


# --------------------------------------------------------------------------- the page
_CSS = """
:root{--fg:#1d232b;--muted:#5a6472;--line:#d8dde3;--accent:#1f6f4a;--bg:#fff;--soft:#f4f6f8}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1100px;margin:0 auto;padding:16px}
h1{font-size:1.5rem;margin:.2em 0}
h2{font-size:1.2rem;margin:1.6em 0 .4em;border-bottom:1px solid var(--line);padding-bottom:.2em}
.question{color:var(--muted);margin:.2em 0 .8em}
.answer{background:#eaf6ef;border-left:6px solid var(--accent);padding:12px 16px;border-radius:6px}
.answer p{margin:.2em 0;font-size:1.1rem}
.kpis{display:flex;flex-wrap:wrap;gap:10px;margin-top:10px}
.kpi{background:#fff;border:1px solid var(--line);border-radius:6px;padding:6px 10px;min-width:140px}
.kpi b{display:block;font-size:1.25rem}
.kpi span{color:var(--muted);font-size:.85rem}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;font-size:.88rem;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{background:var(--soft);position:sticky;top:0}
td.l,th.l{text-align:left}
tr.best td{background:#eaf6ef;font-weight:600}
tr.ref td{color:var(--muted);font-style:italic}
tr.failed td{color:#b03a2e}
figure{margin:0 0 1em}
figure img{max-width:100%;height:auto;display:block;border:1px solid var(--line);border-radius:6px}
figcaption{color:var(--muted);font-size:.9rem}
.note{color:var(--muted);font-size:.9rem}
pre{background:var(--soft);padding:8px;border-radius:6px;overflow-x:auto;font-size:.85rem}
@media (max-width:600px){body{font-size:15px} main{padding:10px} .kpi{min-width:45%}}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _pct(v: Any, std: Any = None) -> str:
    v = _f(v)
    if math.isnan(v):
        return "—"
    s = _f(std)
    return f"{100 * v:.1f}" + (f" ± {100 * s:.1f}" if not math.isnan(s) and s > 0 else "")


def _png(fig: Any) -> str:
    """A matplotlib figure (or PNG bytes) as a ``data:`` URI."""
    if isinstance(fig, (bytes, bytearray)):
        raw = bytes(fig)
    else:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        raw = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


def _selection_html(selection: Mapping[str, Any] | None) -> str:
    """The select step's choice (made on the shadows and dev data, never the victim's membership
    labels) next to the oracle, per pruning setting: the honest version of the answer above."""
    groups = (selection or {}).get("groups") or []
    if not groups:
        return ""
    rows = []
    for g in groups:
        def cell(entry: Mapping[str, Any] | None) -> str:
            if not entry:
                return "none within the budget"
            v = entry.get("victim") or {}
            return (f"{entry['variant']}: test {_pct(v.get('test_acc'))}%, chosen attack {_pct(v.get('chosen_acc'))}%, "
                    f"max attack {_pct(v.get('max_attack_acc'))}%")
        rows.append(f'<tr><td class="l">{_e(g["pruning_method"])} @ {float(g["sparsity"]):.0%}</td>'
                    f'<td class="l">{_e(cell(g.get("chosen")))}</td><td class="l">{_e(cell(g.get("oracle")))}</td>'
                    f'<td>{_e(_pct(g.get("gap")))}</td></tr>')
    s = selection.get("settings") or {}
    return (f'<section id="selection"><h2>Chosen without the victim\'s labels</h2><p class="note">The select step '
            f'(selection.md): within {_e(_pct(s.get("max_acc_drop")))} points of {_e(s.get("reference"))} on '
            f'{_e(s.get("utility"))}, the weakest attack on the shadow models ({_e(s.get("privacy"))}); the oracle '
            f'applies the same rule with the victim\'s labels; gap in points of {_e(s.get("victim_metric"))}.</p>'
            '<div class="scroll"><table><thead><tr><th class="l">pruning</th><th class="l">selected</th>'
            '<th class="l">oracle</th><th>gap</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table></div></section>")


def _answer_html(ans: Mapping[str, Any]) -> str:
    parts = [f'<section class="answer" id="answer"><p><strong>{_e(ans["text"])}</strong></p>']
    best, base, unpruned = ans.get("best"), ans.get("baseline"), ans.get("unpruned")
    kpis = []
    if best:
        kpis.append((_pct(best["attack_acc"], best["attack_acc_std"]) + "%",
                     f"{best['defense']}: attack accuracy ({ATTACKS.label(best['chosen_attack']) if best['chosen_attack'] in ATTACKS else 'max'})"))
        kpis.append((_pct(best["test_acc"], best["test_acc_std"]) + "%", f"{best['defense']}: test accuracy"))
    if base and best and base["defense"] != best["defense"]:
        kpis.append((_pct(base["attack_acc"], base["attack_acc_std"]) + "%", "base: attack accuracy"))
        kpis.append((_pct(base["test_acc"], base["test_acc_std"]) + "%", "base: test accuracy"))
    if unpruned:
        kpis.append((_pct(unpruned["attack_acc"]) + "%", "unpruned: attack accuracy"))
    if kpis:
        parts.append('<div class="kpis">' + "".join(f'<div class="kpi"><b>{_e(v)}</b><span>{_e(k)}</span></div>'
                                                    for v, k in kpis) + "</div>")
    parts.append('<p class="note">Attack accuracy: balanced accuracy of the attack chosen on the shadow models '
                 '(50% = guessing; lower is more private). Budget: test accuracy at most '
                 f'{100 * ans["max_acc_drop"]:g} points below Base at the same pruning.</p></section>')
    return "".join(parts)


def _comparison_html(table: pd.DataFrame, ans: Mapping[str, Any]) -> str:
    means = _means(table)
    best = ans.get("best") or {}
    with_seeds = bool(len(means)) and int(means["n_seeds"].max()) > 1
    head = ["Pruning", "Defense", "Test acc (%)", "Chosen attack", "Attack acc (%)", "AUC (%)", "TPR@1%FPR (%)",
            "Max attack (%)", "FT time (s)"] + (["Seeds"] if with_seeds else [])
    rows = []
    for _, r in means.iterrows():
        cls = ("ref" if r["defense"] in REFERENCES else "")
        if best and r["defense"] == best["defense"] and all(r[k] == best[k] for k in ("pruning_method", "dataset")) \
                and _f(r["sparsity"]) == _f(best["sparsity"]):
            cls = "best"
        ft = _f(r["finetune_seconds"])
        cells = [(_setting(r), "l"), (r["defense"] + (" ★" if cls == "best" else ""), "l"),
                 (_pct(r["test_acc"], r["test_acc_std"]), ""),
                 (ATTACKS.label(r["chosen_attack"]) if r["chosen_attack"] in ATTACKS else "—", "l"),
                 (_pct(r["attack_acc"], r["attack_acc_std"]), ""), (_pct(r["chosen_auc"]), ""),
                 (_pct(r["chosen_tpr_at_1fpr"]), ""), (_pct(r["max_attack_acc"]), ""),
                 ("—" if math.isnan(ft) else f"{ft:.1f}", "")]
        if with_seeds:
            cells.append((str(int(r["n_seeds"])), ""))
        rows.append(f'<tr class="{cls}">' + "".join(f'<td class="{c}">{_e(v)}</td>' for v, c in cells) + "</tr>")
    failed = table[table["status"] != "ok"] if "status" in table else table.iloc[0:0]
    for _, r in failed.iterrows():
        rows.append(f'<tr class="failed"><td class="l">{_e(_setting(r))}</td><td class="l">{_e(r["defense"])}</td>'
                    f'<td class="l" colspan="{len(head) - 2}">FAILED: {_e(str(r.get("error", ""))[:200])}</td></tr>')
    heads = "".join(f'<th class="{"l" if i in (0, 1, 3) else ""}">{_e(h)}</th>' for i, h in enumerate(head))
    return (f'<div class="scroll"><table id="comparison"><thead><tr>{heads}</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></div>")


def _frame_html(frame: pd.DataFrame, table_id: str) -> str:
    if frame is None or frame.empty:
        return '<p class="note">(empty)</p>'
    heads = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    body = []
    for _, r in frame.iterrows():
        cells = []
        for v in r:
            fv = _f(v)
            cells.append("—" if isinstance(v, float) and math.isnan(fv) else
                         (f"{fv:.1f}" if isinstance(v, float) else str(v)))
        body.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return f'<div class="scroll"><table id="{table_id}"><thead><tr>{heads}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def render_report(
    table: pd.DataFrame,
    ans: Mapping[str, Any],
    figures: Mapping[str, tuple[str, Any]],
    *,
    time_cost: pd.DataFrame | None = None,
    settings: Mapping[str, Any] | None = None,
    versions: Mapping[str, str] | None = None,
    title: str | None = None,
    selection: Mapping[str, Any] | None = None,
) -> str:
    """The run's report as one HTML page (UTF-8 string, no external resource).

    Args:
        table: the comparison table (:func:`wemem.ml.reporting.comparison_table`).
        ans: :func:`answer` of that table.
        figures: ``{id: (caption, matplotlib Figure or PNG bytes)}``, in page order.
        time_cost: the time-cost table; settings: what ran (shown as JSON); versions: software versions.
        selection: the select step's choice (:func:`wemem.ml.select.select_defenses`), shown after the answer.
    """
    datasets = ", ".join(sorted({f"{d} / {m}" for d, m in zip(table["dataset"], table["model"])}))
    title = title or f"WeMem report — {datasets}"
    figs = "".join(
        f'<figure id="fig-{_e(key)}"><img alt="{_e(caption)}" src="{_png(fig)}"><figcaption>{_e(caption)}</figcaption></figure>'
        for key, (caption, fig) in figures.items())
    settings_json = json.dumps(settings or {}, indent=1, sort_keys=True, default=str)
    versions_rows = "".join(f'<tr><td class="l">{_e(k)}</td><td class="l">{_e(v)}</td></tr>'
                            for k, v in (versions or {}).items())
    answer_json = json.dumps({k: ans.get(k) for k in ("text", "max_acc_drop", "best", "baseline")}, default=str).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>{_e(title)}</h1>
<p class="question">{_e(ans["question"])}</p>
{_answer_html(ans)}
{_selection_html(selection)}
<h2>Comparison</h2>
<p class="note">One row per pruning setting × defense; references (unpruned, one-shot pruning) in italics; ★ the answer.
Attack accuracy is balanced accuracy of the attack chosen on the shadows; max attack: the best attack picked with the
victim's labels (an upper bound). Full table: defense_comparison.csv / .md of this run.</p>
{_comparison_html(table, ans)}
<h2>Figures</h2>
{figs}
<h2>Time cost</h2>
<p class="note">Victim fine-tuning seconds per defense.</p>
{_frame_html(time_cost, "time-cost")}
<h2>Settings</h2>
<pre id="settings">{_e(settings_json)}</pre>
<h2>Software</h2>
<div class="scroll"><table id="versions"><tbody>{versions_rows}</tbody></table></div>
<script type="application/json" id="wemem-answer">{answer_json}</script>
</main></body></html>
"""
