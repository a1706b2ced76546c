"""Mutation score of the ML core's unit tests (issue 17).

Runs mutmut 3 (``pip install -e ".[mutation]"``) over the defense, attack, metric, memorisation
and pruning modules, one group at a time, each against its own fast unit tests, in a temporary
copy of the project (``mutants/`` and every cache stay there; the checkout is never written
except for the two result files). Writes ``benchmarks/results/mutation_score.json`` and
``mutation_score.md``: per group the mutants killed / survived / timed out / not covered, the
score, and every survivor with its diff and, where ``benchmarks/mutation_equivalent.json`` has
one, the reason it is equivalent or harmless.

Score = killed (timeouts count as killed) / (all mutants − those noted as equivalent); a survivor
noted as harmless (e.g. it changes only which ROC points a plot keeps) still counts against it.

    nice -n 15 .venv/bin/python benchmarks/mutation_score.py                 # every group
    nice -n 15 .venv/bin/python benchmarks/mutation_score.py --groups pruning,attacks_metric
    nice -n 15 .venv/bin/python benchmarks/mutation_score.py --groups attacks_model --sample 150
    .venv/bin/python benchmarks/mutation_score.py --list

``--sample N`` tests a seeded uniform sample of N of the group's mutants (for groups whose tests
train models: tens of seconds per mutant); the score is then an estimate, reported with its 95%
Wilson interval, and the survivors listed are the sample's.

A group that was not run keeps its previous entry in the JSON (marked with the date it ran), so
the groups can be run on different days and the file still holds the whole picture.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import datetime as dt
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
EQUIVALENT = REPO / "benchmarks" / "mutation_equivalent.json"

# group → files to mutate, their unit tests and extra pytest arguments; DESELECT: tests left out
# everywhere (slow: a subprocess, or a 20 s fixture that the fast tests already cover)
GROUPS: dict[str, dict[str, list[str]]] = {
    "attacks_metric": {
        "mutate": ["src/wemem/ml/attacks/metric.py", "src/wemem/ml/attacks/metrics.py",
                   "src/wemem/ml/attacks/audit.py"],
        "tests": ["tests/ml/test_attacks_threshold.py", "tests/ml/test_attacks_audit.py",
                  "tests/ml/test_properties.py", "tests/ml/test_attack_known_answers.py",
                  "tests/ml/test_attacks.py", "tests/ml/test_attacks_registry.py", "tests/ml/test_attack_edges.py"],
        # the planted world with the six attacks that train no model (about a second per mutant)
        "pytest_args": ["-k", "not ten_attacks and not chance_when_membership"],
    },
    "attacks_glue": {
        "mutate": ["src/wemem/ml/attacks/signals.py", "src/wemem/ml/attacks/base.py",
                   "src/wemem/ml/attacks/selection.py", "src/wemem/ml/attacks/runner.py"],
        "tests": ["tests/ml/test_attacks.py", "tests/ml/test_attacks_audit.py", "tests/ml/test_attack_known_answers.py",
                  "tests/ml/test_attacks_registry.py", "tests/ml/test_attack_glue_exact.py"],
        "pytest_args": ["-k", "not ten_attacks and not chance_when_membership"],
    },
    "attacks_model": {
        "mutate": ["src/wemem/ml/attacks/classifier.py", "src/wemem/ml/attacks/calibrated.py"],
        "tests": ["tests/ml/test_attacks.py", "tests/ml/test_attack_known_answers.py",
                  "tests/ml/test_attacks_registry.py", "tests/ml/test_attack_model_glue.py"],
    },
    "defenses": {
        "mutate": ["src/wemem/ml/defenses/*.py"],
        "tests": ["tests/ml/test_defense_mechanisms.py", "tests/ml/test_defenses.py",
                  "tests/ml/test_dpsgd.py", "tests/ml/test_dpsgd_layers.py"],
    },
    "memorization": {
        "mutate": ["src/wemem/ml/memorization/estimator.py", "src/wemem/ml/memorization/ensemble.py",
                   "src/wemem/ml/memorization/sparse.py", "src/wemem/ml/memorization/sampling.py",
                   "src/wemem/ml/memorization/pool.py"],
        "tests": ["tests/ml/test_memorization.py", "tests/ml/test_memorization_exact.py"],
    },
    "pruning": {
        "mutate": ["src/wemem/ml/pruning.py", "src/wemem/ml/ranking.py"],
        "tests": ["tests/ml/test_pruning.py", "tests/ml/test_pruning_conv.py", "tests/ml/test_ranking.py",
                  "tests/ml/test_pruning_records.py", "tests/ml/test_ranking_tables.py",
                  "tests/ml/test_properties.py"],
        # the three image architectures pruned five times (70 s per prune_step mutant); the
        # hand-computed channel/bias/BatchNorm tests cover the same code in a second
        "pytest_args": ["-k", "not test_image_models_pruned_exactly_in_five_iterations"],
    },
}
DESELECT = [
    # each starts a fresh interpreter (5 s) and checks imports, not results
    "tests/ml/test_attacks.py::test_library_does_not_import_kedro",
    "tests/ml/test_attacks_registry.py::test_evaluation_library_does_not_import_kedro",
    # the 20 s all-attacks fixture: the known-answer world covers every attack in about a second
    "tests/ml/test_attacks.py::test_run_attacks_returns_all_ten_with_finite_metrics",
    "tests/ml/test_attacks.py::test_overfit_is_detected",
]
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}


def no_deadline(conftest: Path) -> None:
    """Hypothesis without its wall-clock deadline in a copy's conftest.py."""
    text = conftest.read_text()
    old = 'register_profile("wemem", database=None, derandomize=True)'
    if old not in text:
        raise SystemExit(f"{conftest}: the Hypothesis profile line changed; update mutation_score.py")
    conftest.write_text(text.replace(old, old[:-1] + ", deadline=None)"))


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def make_copy(group: dict[str, list[str]], where: Path) -> None:
    """The project's src/, tests/, benchmarks/, conf/ and pyproject.toml in ``where``, with a
    ``[tool.mutmut]`` section for ``group`` and Hypothesis without its wall-clock deadline (a
    mutant that is merely slower must not count as killed)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results", ".hypothesis")
    for part in ("src", "tests", "benchmarks", "conf"):
        shutil.copytree(REPO / part, where / part, ignore=ignore)
    no_deadline(where / "tests" / "conftest.py")
    tests = [t for t in group["tests"] if (REPO / t).exists()]
    deselect = [a for d in DESELECT if d.split("::")[0] in tests for a in ("--deselect", d)]
    deselect += group.get("pytest_args", [])
    config = (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {toml_list(group['mutate'])}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        f"pytest_add_cli_args = {toml_list(['-q', '-p', 'no:randomly', *deselect])}\n"
        "also_copy = [\"benchmarks/\", \"conf/\"]\n"
        "use_git_change_detection = false\n"
        "timeout_multiplier = 20.0\n"
        "timeout_constant = 10.0\n"
    )
    (where / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text() + config)


def mutmut(where: Path, *args: str, log=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # mutants/src comes first on sys.path
    code = "import sys; from mutmut.__main__ import cli; sys.argv = ['mutmut', *sys.argv[1:]]; cli()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=where, env=env, text=True,
                          stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT)


def read_results(where: Path) -> dict[str, str]:
    """mutant name → status, from mutmut's ``.meta`` files."""
    out: dict[str, str] = {}
    for meta in sorted((where / "mutants").rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            out[name] = STATUS.get(code, "suspicious")
    return out


@functools.lru_cache(maxsize=None)
def _functions(path: Path) -> tuple[str, dict[str, ast.AST]]:
    """A mutated file's source and its functions by name (parsed once per file)."""
    source = path.read_text()
    return source, {n.name: n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def diff_of(where: Path, name: str) -> str:
    """The mutant's changed lines: its function in mutants/ against the original copy mutmut
    keeps beside it (``<function>__mutmut_orig``), without starting mutmut once per survivor."""
    module, function = name.rsplit(".", 1)
    base = where / "mutants" / "src" / Path(*module.split("."))
    path = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
    source, found = _functions(path)
    orig_name = function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
    if function not in found or orig_name not in found:
        return f"(source of {function} not found)"

    def body(n):
        return [ln.replace(n.name, "f", 1) if i == 0 else ln
                for i, ln in enumerate(ast.get_source_segment(source, n).splitlines())]

    diff = difflib.unified_diff(body(found[orig_name]), body(found[function]), lineterm="", n=0)
    return "\n".join(ln for ln in diff if ln[:1] in "+-" and not ln.startswith(("+++", "---")))


def sample_names(names: list[str], n: int, seed: int) -> list[str]:
    """A seeded uniform sample of ``n`` mutant names without replacement (all when n ≥ len),
    sorted; independent of the order the names come in."""
    pool = sorted(set(names))
    if n >= len(pool):
        return pool
    return sorted(random.Random(seed).sample(pool, n))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95% Wilson score interval of a proportion k/n (None when n = 0)."""
    if n <= 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def run_group(name: str, group: dict[str, list[str]], max_children: int, keep: bool,
              existing: Path | None = None, rerun: bool = False, previous: dict | None = None,
              sample: int | None = None, seed: int = 0) -> dict:
    """Mutation-test one group in a fresh temporary copy (or, with ``existing``, only read the
    results of a copy an earlier run kept, e.g. one stopped part-way). With ``previous`` (the
    group's last entry in the JSON), only that run's survivors are tested again, in a fresh copy
    with the current tests; every other mutant keeps its earlier status (valid while the mutated
    files are unchanged and tests are only added: the caller checks the first). With ``sample``,
    only a seeded sample of that many mutants is tested and scored."""
    where = existing or Path(tempfile.mkdtemp(prefix=f"wemem-mutation-{name}-"))
    start = time.perf_counter()
    population = None
    try:
        if existing is None:
            make_copy(group, where)
            names = [s["mutant"] for s in previous["survivors"]] if previous else []
            if sample:
                # mutmut generates every mutant (and the per-test coverage) before it filters by
                # name; a name that matches nothing stops it right there, leaving their names
                with open(where / "mutmut.log", "w") as log:
                    mutmut(where, "run", "__no_such_mutant__", log=log)
                everything = list(read_results(where))
                if not everything:
                    tail = (where / "mutmut.log").read_text()[-3000:]
                    raise SystemExit(f"mutmut generated no mutants for group {name}:\n{tail}")
                population = len(everything)
                names = sample_names(everything, sample, seed)
                print(f"[{name}] testing a sample of {len(names)} of {population} mutants (seed {seed})", flush=True)
            with open(where / "mutmut.log", "a" if sample else "w") as log:
                mutmut(where, "run", "--max-children", str(max_children), *names, log=log)
        elif rerun:
            # the checkout's current tests into the kept copy; only its survivors run again
            # (mutmut collects stats for new tests; the group's test files must be the same)
            for dst in (where / "tests", where / "mutants" / "tests"):
                shutil.copytree(REPO / "tests", dst, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                no_deadline(dst / "conftest.py")
            # and the mutants a stopped run left unchecked
            names = [k for k, v in read_results(where).items()
                     if v in ("survived", "no tests", "suspicious", "not checked")]
            with open(where / "mutmut.log", "a") as log:
                mutmut(where, "run", "--max-children", str(max_children), *names, log=log)
        statuses = read_results(where)
        if population is not None:  # only the sample is scored
            sampled = set(names)
            statuses = {k: v for k, v in statuses.items() if k in sampled}
        if previous:  # a survivors-only copy (fresh, or kept and read again with --from-dir)
            again = {s["mutant"] for s in previous["survivors"]}
            statuses = {k: (v if k in again else "killed") for k, v in statuses.items()}
        if not statuses or all(v == "not checked" for v in statuses.values()):
            tail = (where / "mutmut.log").read_text()[-3000:]
            raise SystemExit(f"mutmut gave no results for group {name}:\n{tail}")
        equivalent = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
        survivors = []
        for mutant, status in sorted(statuses.items()):
            if status in ("survived", "no tests", "suspicious"):
                survivors.append({"mutant": mutant, "status": status, "diff": diff_of(where, mutant),
                                  "equivalent": equivalent.get(mutant)})
        counts: dict[str, int] = {}
        for status in statuses.values():
            counts[status] = counts.get(status, 0) + 1
        killed = counts.get("killed", 0) + counts.get("timeout", 0)
        result = {
            "files": group["mutate"], "tests": group["tests"], "counts": counts, "mutants": len(statuses),
            "killed": killed,
            "raw_score": round(killed / len(statuses), 4) if statuses else None,
            "seconds": round((where / "mutmut.log").stat().st_mtime - (where / "pyproject.toml").stat().st_mtime, 1)
            if existing is not None else round(time.perf_counter() - start, 1),
            "ran": dt.date.today().isoformat(), "survivors": survivors,
        }
        if population is not None:
            result["sample"] = {"n": len(statuses), "population": population, "seed": seed}
        return score(result)
    finally:
        if keep or existing is not None:
            print(f"kept {where}")
        else:
            shutil.rmtree(where, ignore_errors=True)


def score(group: dict) -> dict:
    """Sets ``group``'s equivalent count, score and (for a sample) its 95% interval from its
    survivors' notes, counts and kills; returns it."""
    c = group["counts"]
    # a note that calls the mutant harmless (not equivalent) keeps it counted as a survivor
    group["equivalent"] = sum(1 for s in group["survivors"] if s["equivalent"] and "harmless" not in s["equivalent"])
    # a run stopped part-way leaves mutants "not checked": they are not scored
    scored = group["mutants"] - group["equivalent"] - c.get("skipped", 0) - c.get("not checked", 0)
    group["score"] = round(group["killed"] / scored, 4) if scored else None
    if group.get("sample"):
        group["sample"]["score_ci95"] = wilson(group["killed"], scored) if scored else None
    return group


def rejudge(group: dict) -> dict:
    """``group`` (a recorded result) with its survivors' notes read again from
    ``mutation_equivalent.json`` and its score recomputed (nothing runs)."""
    equivalent = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    for s in group["survivors"]:
        s["equivalent"] = equivalent.get(s["mutant"])
    return score(group)


def markdown(report: dict) -> str:
    lines = ["# Mutation score (mutmut 3, `benchmarks/mutation_score.py`)", "",
             "Score = killed (timeouts included) / (mutants − survivors judged equivalent); survivors judged "
             "harmless still count against the score.", "",
             "| group | mutants | killed | survived | not covered | not checked | equivalent | score | raw | time (s) | ran |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, g in report["groups"].items():
        c = g["counts"]
        label = name
        if g.get("sample"):
            ci = g["sample"]["score_ci95"]
            label = (f"{name} (sample of {g['sample']['n']} of {g['sample']['population']}"
                     + (f", 95% CI {100 * ci[0]:.1f}–{100 * ci[1]:.1f}%" if ci else "") + ")")
        lines.append(f"| {label} | {g['mutants']} | {g['killed']} | {c.get('survived', 0)} | "
                     f"{c.get('no tests', 0)} | {c.get('not checked', 0)} | {g['equivalent']} | {100 * (g['score'] or 0):.1f}% | "
                     f"{100 * (g['raw_score'] or 0):.1f}% | {g['seconds']} | {g['ran']} |")
    t = report["total"]
    left_out = t.get("sampled_groups_left_out") or []
    lines += [f"| **all**{' (full runs; sampled groups left out)' if left_out else ''} | {t['mutants']} | {t['killed']} | | | | {t['equivalent']} | "
              f"**{100 * (t['score'] or 0):.1f}%** | {100 * (t['raw_score'] or 0):.1f}% | | |", ""]
    for name, g in report["groups"].items():
        if not g["survivors"]:
            continue
        lines += [f"## Survivors: {name}", ""]
        for s in g["survivors"]:
            why = s["equivalent"] or "**not yet judged**"
            lines += [f"- `{s['mutant']}` ({s['status']}): {why}", "", "  ```diff",
                      *("  " + ln for ln in s["diff"].splitlines()), "  ```", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", default=",".join(GROUPS), help="comma-separated groups (default: all)")
    ap.add_argument("--max-children", type=int, default=2, help="mutants tested in parallel")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy (prints where)")
    ap.add_argument("--list", action="store_true", help="list the groups and exit")
    ap.add_argument("--from-dir", type=Path, help="only read the results of a kept copy (one group)")
    ap.add_argument("--rerun-survivors", action="store_true",
                    help="with --from-dir: copy the current tests in and run the copy's survivors (and unchecked mutants) again")
    ap.add_argument("--rejudge", action="store_true",
                    help="run nothing: read benchmarks/mutation_equivalent.json again for the groups' recorded survivors "
                         "and recompute their scores")
    ap.add_argument("--sample", type=int, help="test a seeded uniform sample of this many mutants per group")
    ap.add_argument("--seed", type=int, default=0, help="seed of --sample")
    ap.add_argument("--since", help="with --survivors-of-last-run: the commit of a last run that recorded none")
    ap.add_argument("--survivors-of-last-run", action="store_true",
                    help="in a fresh copy, test only the survivors the JSON lists for the group (the others "
                         "keep their status); refused when a mutated file changed since that run's commit")
    args = ap.parse_args()
    if args.list:
        for name, g in GROUPS.items():
            print(f"{name}: {', '.join(g['mutate'])}\n    tests: {', '.join(g['tests'])}")
        return
    names = [g.strip() for g in args.groups.split(",") if g.strip()]
    unknown = [g for g in names if g not in GROUPS]
    if unknown:
        raise SystemExit(f"unknown group(s) {unknown}; choose from {list(GROUPS)}")
    try:
        import mutmut  # noqa: F401
    except ImportError:
        raise SystemExit('mutmut is not installed: pip install -e ".[mutation]"') from None
    out = RESULTS / "mutation_score.json"
    if args.rejudge:
        report = json.loads(out.read_text())
        for name in names:
            if name in report["groups"]:
                write(name, rejudge(report["groups"][name]), out)
                g = report["groups"][name]
                print(f"[{name}] {g['killed']}/{g['mutants']} killed, {g['equivalent']} equivalent, score {g['score']}")
        return
    for name in names:
        print(f"[{name}] mutating {', '.join(GROUPS[name]['mutate'])}", flush=True)
        previous = None
        if args.survivors_of_last_run:
            previous = json.loads(out.read_text())["groups"][name]
            since = previous.get("source_commit") or args.since
            if not since:
                raise SystemExit(f"{name}: the last run recorded no source_commit; pass it with --since")
            changed = subprocess.run(["git", "diff", "--name-only", since, "--", *GROUPS[name]["mutate"]],
                                     cwd=REPO, text=True, capture_output=True, check=True).stdout.split()
            if changed:
                raise SystemExit(f"{name}: {changed} changed since {since}; run the whole group")
        if args.sample is not None and (args.sample < 1 or previous or args.from_dir):
            raise SystemExit("--sample takes a positive count and a fresh run (not --from-dir or --survivors-of-last-run)")
        # the commit the copy is made from (taken before the run: commits made while it runs are not in it)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, text=True, capture_output=True,
                              check=True).stdout.strip()
        g = run_group(name, GROUPS[name], args.max_children, args.keep, args.from_dir, args.rerun_survivors, previous,
                      sample=args.sample, seed=args.seed)
        g["source_commit"] = head
        if previous:
            g["survivors_of_last_run"] = {"earlier_seconds": previous["seconds"], "earlier_ran": previous["ran"]}
        print(f"[{name}] {g['killed']}/{g['mutants']} killed, score {g['score']}, {g['seconds']} s", flush=True)
        write(name, g, out)


def write(name: str, group: dict, out: Path) -> None:
    """Adds one group's result to the report on disk (read again now: groups may run in
    parallel processes) and rewrites the JSON and the Markdown."""
    report = json.loads(out.read_text()) if out.exists() else {"groups": {}}
    report["groups"][name] = group
    report["groups"] = {k: report["groups"][k] for k in GROUPS if k in report["groups"]}
    # a sampled group's counts are of its sample: the total adds up the groups run in full
    groups = [g for g in report["groups"].values() if not g.get("sample")]
    mutants = sum(g["mutants"] for g in groups)
    killed = sum(g["killed"] for g in groups)
    equivalent = sum(g["equivalent"] for g in groups)
    skipped = sum(g["counts"].get("skipped", 0) + g["counts"].get("not checked", 0) for g in groups)
    scored = mutants - equivalent - skipped
    report["total"] = {"mutants": mutants, "killed": killed, "equivalent": equivalent,
                       "score": round(killed / scored, 4) if scored else None,
                       "raw_score": round(killed / mutants, 4) if mutants else None,
                       "sampled_groups_left_out": [k for k, g in report["groups"].items() if g.get("sample")]}
    report["tool"] = "mutmut " + _version()
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    out.with_suffix(".md").write_text(markdown(report))


def _version() -> str:
    from importlib.metadata import version

    return version("mutmut")


if __name__ == "__main__":
    main()
