"""One self-contained HTML page per run: the question and its answer first, then the evidence.

:func:`answer` picks the best defense within an accuracy budget from the comparison table;
:func:`render_report` lays out the answer, the comparison table, the figures (PNG, embedded as
base64: the page needs no network), the time cost, the settings and the software versions on a
page that reads on a phone's width. No Kedro here: the pipeline node only passes things in.
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

from .attacks import ATTACKS
from .schema import Section, number

__all__ = ["ReportSettings", "answer", "answer_metrics", "parent_summary", "render_report", "run_settings", "software_versions",
           "REFERENCES"]

REFERENCES = ("unpruned", "one_shot")
"""Table rows that are references, not defenses: the unpruned model and one-shot pruning."""

GROUP = ["dataset", "model", "pruning_method", "sparsity"]


class ReportSettings(Section):
    """``mia_evaluation.report``: the accuracy budget of the report's answer. A defense qualifies
    when its victim test accuracy is at most ``max_acc_drop`` (a fraction: 0.02 = 2 points) below
    Base's at the same pruning method and sparsity."""

    max_acc_drop: number(float, 0, 1) = 0.02


def _f(v: Any) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v


def _attack_acc(table: pd.DataFrame) -> pd.Series:
    """The chosen attack's victim accuracy; where no attack was chosen, the max over attacks."""
    chosen = table["chosen_acc"] if "chosen_acc" in table else pd.Series(math.nan, index=table.index)
    return chosen.astype(float).where(chosen.notna(), table["max_attack_acc"].astype(float))


def _means(table: pd.DataFrame) -> pd.DataFrame:
    """One row per combination (dataset, model, pruning, defense): the mean over seeds of test
    accuracy and attack accuracy, their standard deviations and the number of seeds."""
    ok = table[table["status"] == "ok"] if "status" in table else table
    ok = ok.assign(attack_acc=_attack_acc(ok), test_acc=ok["test_acc"].astype(float))
    keys = GROUP + ["defense"]
    rows = []
    for key, g in ok.groupby(keys, sort=False, dropna=False):
        first = g.iloc[0]
        attacks = g["chosen_attack"].fillna("") if "chosen_attack" in g else pd.Series([""])
        rows.append({
            **dict(zip(keys, key)),
            "test_acc": g["test_acc"].mean(), "test_acc_std": g["test_acc"].std(ddof=1) if len(g) > 1 else 0.0,
            "attack_acc": g["attack_acc"].mean(),
            "attack_acc_std": g["attack_acc"].std(ddof=1) if len(g) > 1 else 0.0,
            "n_seeds": len(g),
            "chosen_attack": attacks.mode().iloc[0] if len(attacks) else "",
            "chosen_auc": _f(g["chosen_auc"].mean()) if "chosen_auc" in g else math.nan,
            "chosen_tpr_at_1fpr": _f(g["chosen_tpr_at_1fpr"].mean()) if "chosen_tpr_at_1fpr" in g else math.nan,
            "max_attack_acc": _f(g["max_attack_acc"].mean()),
            "finetune_seconds": _f(g["finetune_seconds"].mean()) if "finetune_seconds" in g else math.nan,
            "strongest_attack": first.get("strongest_attack", ""),
        })
    columns = keys + ["test_acc", "test_acc_std", "attack_acc", "attack_acc_std", "n_seeds", "chosen_attack",
                      "chosen_auc", "chosen_tpr_at_1fpr", "max_attack_acc", "finetune_seconds", "strongest_attack"]
    return pd.DataFrame(rows, columns=columns)  # the columns even when no combination succeeded


def _entry(r: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("dataset", "model", "pruning_method", "sparsity", "defense", "test_acc", "test_acc_std", "attack_acc",
            "attack_acc_std", "n_seeds", "chosen_attack", "chosen_auc", "chosen_tpr_at_1fpr", "max_attack_acc")
    out = {k: r.get(k) for k in keys}
    for k in ("sparsity", "test_acc", "test_acc_std", "attack_acc", "attack_acc_std", "chosen_auc",
              "chosen_tpr_at_1fpr", "max_attack_acc"):
        out[k] = None if out[k] is None or math.isnan(_f(out[k])) else float(out[k])
    out["n_seeds"] = int(out["n_seeds"] or 0)
    out["chosen_attack"] = out["chosen_attack"] or ""
    return out


def _setting(r: Mapping[str, Any]) -> str:
    return "unpruned" if r["pruning_method"] == "none" else f"{r['pruning_method']} @ {float(r['sparsity']):.0%}"


def answer(table: pd.DataFrame, max_acc_drop: float) -> dict[str, Any]:
    """The best defense within an accuracy budget.

    Per pruning setting (dataset, model, method, sparsity), the baseline is the ``base`` row
    (pruned and fine-tuned without a defense); a defense qualifies when its test accuracy is at
    least the baseline's minus ``max_acc_drop``. Of all qualifying rows (Base included: when no
    defense beats it, the answer is Base), the best is the one with the lowest attack accuracy
    (the chosen attack's; the max over attacks where none was chosen), ties broken by higher test
    accuracy. With several seeds (a ``seed`` column) the means over seeds are compared.

    Returns ``{"question", "max_acc_drop", "best", "baseline", "unpruned", "candidates",
    "over_budget", "acc_drop", "attack_reduction", "text"}``; ``best`` and ``baseline`` are rows
    (dicts with ``defense``, ``pruning_method``, ``sparsity``, ``test_acc``, ``attack_acc``,
    ``chosen_attack``, ...) or None when the table has no Base row.
    """
    means = _means(table)
    question = (f"Which defense lowers membership-inference accuracy the most while losing at most "
                f"{100 * max_acc_drop:g} points of test accuracy against Base?")
    out: dict[str, Any] = {"question": question, "max_acc_drop": float(max_acc_drop), "best": None,
                           "baseline": None, "unpruned": None, "candidates": [], "over_budget": [],
                           "acc_drop": None, "attack_reduction": None}
    unpruned = means[means["defense"] == "unpruned"]
    if len(unpruned):
        out["unpruned"] = _entry(unpruned.iloc[0])
    defenses = means[~means["defense"].isin(REFERENCES)]
    candidates, over, baselines = [], [], {}
    for key, g in defenses.groupby(GROUP, sort=False, dropna=False):
        base = g[g["defense"] == "base"]
        if base.empty or math.isnan(_f(base.iloc[0]["test_acc"])):
            continue
        floor = float(base.iloc[0]["test_acc"]) - max_acc_drop
        baselines[key] = base.iloc[0]
        for _, r in g.iterrows():
            if math.isnan(_f(r["attack_acc"])) or math.isnan(_f(r["test_acc"])):
                continue
            (candidates if r["test_acc"] >= floor - 1e-12 else over).append(r)
    out["candidates"] = [_entry(r) for r in candidates]
    out["over_budget"] = [_entry(r) for r in over]
    if not candidates:
        out["text"] = ("No answer: the table has no Base row to measure the accuracy budget against "
                       "(or no combination succeeded).")
        return out
    best = min(candidates, key=lambda r: (float(r["attack_acc"]), -float(r["test_acc"])))
    base = baselines[tuple(best[k] for k in GROUP)]
    out["best"], out["baseline"] = _entry(best), _entry(base)
    out["acc_drop"] = float(base["test_acc"] - best["test_acc"])
    out["attack_reduction"] = float(base["attack_acc"] - best["attack_acc"])
    attack = ATTACKS.label(best["chosen_attack"]) if best["chosen_attack"] in ATTACKS else "the strongest attack"
    seeds = f" (mean of {int(best['n_seeds'])} seeds)" if best["n_seeds"] > 1 else ""
    if best["defense"] == "base":
        out["text"] = (f"No defense beats Base within a {100 * max_acc_drop:g}-point accuracy budget "
                       f"({_setting(best)}): {attack} reaches {100 * best['attack_acc']:.1f}% at "
                       f"{100 * best['test_acc']:.1f}% test accuracy{seeds}.")
    else:
        out["text"] = (f"{best['defense'].upper()} ({_setting(best)}) is the best defense within a "
                       f"{100 * max_acc_drop:g}-point accuracy budget: {attack} accuracy "
                       f"{100 * best['attack_acc']:.1f}% (Base {100 * base['attack_acc']:.1f}%) at "
                       f"{100 * best['test_acc']:.1f}% test accuracy (Base {100 * base['test_acc']:.1f}%){seeds}.")
    return out


def answer_metrics(ans: Mapping[str, Any]) -> dict[str, float]:
    """The answer's numbers as flat metrics (for the parent MLflow run): the best defense's and
    Base's attack and test accuracy, the unpruned model's, and the budget."""
    out: dict[str, float] = {"max_acc_drop": float(ans["max_acc_drop"])}
    for who, key in (("best", "best"), ("base", "baseline"), ("unpruned", "unpruned")):
        r = ans.get(key)
        if not r:
            continue
        for metric in ("attack_acc", "test_acc"):
            if r.get(metric) is not None:
                out[f"{who}_{'chosen_attack_acc' if metric == 'attack_acc' else metric}"] = float(r[metric])
    return out


def parent_summary(table: pd.DataFrame, max_acc_drop: float,
                   run_name: str | None = None) -> tuple[dict[str, str], dict[str, float]]:
    """Tags and metrics of the run's parent in MLflow: its description ``mlflow.note.content``
    (Markdown: the answer, the question, where the details are), ``wemem.best_defense``, and
    :func:`answer_metrics`. With the parent's ``run_name`` (``mnist1d · __default__ · <time>``),
    also a new name that carries the answer after the dataset (``mnist1d · best: rsw · ...``),
    so the runs list shows it before the name is cut."""
    ans = answer(table, max_acc_drop)
    note = [f"**{ans['text']}**", "", ans["question"], "",
            "Full report: this run's artifact `report_html.html`. Expand this run for one child run per "
            "defense (named `defense · pruning`; references `unpruned`, `one_shot`)."]
    tags = {"mlflow.note.content": "\n".join(note)}
    if ans.get("best"):
        tags["wemem.best_defense"] = str(ans["best"]["defense"])
        if run_name and " · best: " not in run_name:
            head, _, rest = run_name.partition(" · ")
            tags["mlflow.runName"] = " · ".join(p for p in (head, f"best: {ans['best']['defense']}", rest) if p)
    return tags, answer_metrics(ans)


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
) -> str:
    """The run's report as one HTML page (UTF-8 string, no external resource).

    Args:
        table: the comparison table (:func:`wemem.ml.reporting.comparison_table`).
        ans: :func:`answer` of that table.
        figures: ``{id: (caption, matplotlib Figure or PNG bytes)}``, in page order.
        time_cost: the time-cost table; settings: what ran (shown as JSON); versions: software versions.
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
