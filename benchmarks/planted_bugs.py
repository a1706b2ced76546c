"""Re-apply issue 17's five planted bugs, one at a time, to a temporary copy of ``src/`` and
run the module's unit tests against it; prints (and with ``--write``, saves to
``benchmarks/results/planted_bugs.txt``) which tests fail for each. Every bug must fail at
least one test.

    nice -n 10 .venv/bin/python benchmarks/planted_bugs.py [--write] [--bugs adv_theta_zero,...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFENSE_TESTS = ["tests/ml/test_defense_mechanisms.py", "tests/ml/test_defenses.py", "tests/ml/test_dpsgd.py",
                 "tests/ml/test_dpsgd_layers.py"]
ATTACK_TESTS = ["tests/ml/test_attacks.py", "tests/ml/test_attacks_threshold.py", "tests/ml/test_attacks_audit.py",
                "tests/ml/test_attacks_registry.py", "tests/ml/test_properties.py",
                "tests/ml/test_attack_known_answers.py", "tests/ml/test_attack_glue_exact.py", "tests/ml/test_attack_model_glue.py"]
SLOW = ["tests/ml/test_attacks.py::test_library_does_not_import_kedro",
        "tests/ml/test_attacks_registry.py::test_evaluation_library_does_not_import_kedro"]

# bug → (file under src/, text, replacement), ... ; the tests that must catch it
BUGS = {
    "dpsgd_plain_adam": (  # DP-SGD stepping plain Adam: no clipping, no noise
        [("wemem/ml/defenses/dpsgd.py", "            sums, _ = self.clipper.clipped_sums(loss * batch, batch)\n",
          "            self.clipper.discard()\n            (loss * batch).backward()\n"
          "            sums = [p.grad.detach().clone() for p in self.clipper.params]\n"),
         ("wemem/ml/defenses/dpsgd.py", "        if self.sigma > 0:\n            noise", "        if False:\n            noise")],
        DEFENSE_TESTS),
    "adv_theta_zero": (  # ADV with its adversarial term set to zero
        [("wemem/ml/defenses/adversarial.py", "F.cross_entropy(logits, yb) + self.theta * gain",
          "F.cross_entropy(logits, yb) + 0.0 * gain")], DEFENSE_TESTS),
    "swmr_no_risky_l2": (  # SWMR without its risky-sample L2: every batch stepped by the general optimizer
        [("wemem/ml/defenses/memorisation.py", '    name = "swmr"\n',
          '    name = "swmr"\n\n    def batch_optimizer(self):\n        self._cursor += 1\n        return self.optimizer\n')],
        DEFENSE_TESTS),
    "metric_global_threshold": (  # Conf/Entr/Mentr with one global threshold
        [("wemem/ml/attacks/metric.py",
          "    thresholds, _ = class_thresholds(signal(sh.probs, sh.labels), sh.labels, sh.member, c)\n",
          "    _, g = class_thresholds(signal(sh.probs, sh.labels), sh.labels, sh.member, c)\n"
          "    thresholds = np.full(c, g)\n")], ATTACK_TESTS),
    "ci_nn_no_onehot": (  # CI-NN without the one-hot label
        [("wemem/ml/attacks/classifier.py",
          "    return np.concatenate([p, _onehot(np.asarray(out.labels, dtype=np.int64), p.shape[1])], axis=1)",
          "    return p")], ATTACK_TESTS),
}


def plant(src: Path, edits) -> None:
    for rel, old, new in edits:
        path = src / rel
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"{rel}: the code the bug is planted in changed; update benchmarks/planted_bugs.py")
        path.write_text(text.replace(old, new))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bugs", default=",".join(BUGS))
    ap.add_argument("--write", action="store_true", help="save the summary in benchmarks/results/")
    args = ap.parse_args()
    lines, missed = [], []
    for bug in args.bugs.split(","):
        edits, tests = BUGS[bug]
        with tempfile.TemporaryDirectory(prefix=f"wemem-planted-{bug}-") as tmp:
            src = Path(tmp) / "src"
            shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
            plant(src, edits)
            env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
            cmd = [sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:randomly",
                   *(a for s in SLOW for a in ("--deselect", s))]
            out = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True).stdout
        failed = [ln.split(" - ")[0].removeprefix("FAILED ") for ln in out.splitlines() if ln.startswith("FAILED ")]
        summary = out.strip().splitlines()[-1] if out.strip() else "(no output)"
        lines += [f"{bug}: {summary}", *(f"    {t}" for t in failed)]
        print("\n".join(lines[-(len(failed) + 1):]), flush=True)
        if not failed:
            missed.append(bug)
    if args.write:
        (REPO / "benchmarks" / "results" / "planted_bugs.txt").write_text("\n".join(lines) + "\n")
    if missed:
        raise SystemExit(f"planted bugs no test caught: {missed}")


if __name__ == "__main__":
    main()
