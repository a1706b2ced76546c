"""Every ``kedro`` command in the README parses and passes validation, so the README cannot
drift from the code: ``kedro run`` commands are run with ``--runner=wemem.runners.DryRunner``
(configuration loaded and validated, pipelines built and filtered, no node run); other
``kedro`` commands must at least parse (``--help``)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, make_project, project_env

pytestmark = pytest.mark.slow

KEDRO = str(Path(sys.executable).parent / "kedro")


def readme_commands(text: str) -> list[list[str]]:
    """The ``kedro ...`` commands of a Markdown text (fenced shell blocks and inline code), as
    argument lists without the leading environment assignments; placeholders (``<name>``) are
    left out (also `...`)."""
    candidates = []
    for block in re.findall(r"```(?:bash|sh|shell)?\n(.*?)```", text, flags=re.S):
        candidates += [line.split("#")[0] for line in block.splitlines()]
    candidates += re.findall(r"(?<!`)`([^`\n]*\bkedro [^`\n]*)`(?!`)", text)
    commands = []
    for line in candidates:
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
            words = words[1:]
        if not words or Path(words[0]).name != "kedro" or any("<" in w or "..." in w for w in words):
            continue
        if words[1:] not in [c[1:] for c in commands]:
            commands.append(["kedro", *words[1:]])
    return commands


def test_readme_commands_are_found():
    # what it catches: the extraction silently finding nothing (the drift test would then pass
    # vacuously), or missing the fenced and inline commands the README is known to hold
    commands = [" ".join(c) for c in readme_commands((REPO / "README.md").read_text())]
    assert "kedro run --env full_grid" in commands
    assert "kedro run --params dataset=location" in commands
    assert "kedro run --params pruning_defense.grid.sweeps=rmr_lambda" in commands  # a sweep from the CLI
    # the paper's experiments as environments, with two worker processes
    assert "kedro run --runner=ParallelRunner --runner-params max_workers=2 --env exp_rmr_lambda" in commands
    assert any(c.startswith("kedro run --runner=ParallelRunner") for c in commands)
    assert not any("<" in c for c in commands)


def test_extraction_drops_env_and_placeholders():
    # what it catches: environment assignments taken for the program, or a placeholder command
    # (which can never validate) being checked
    text = ("```bash\nA=1 B=x kedro run --pipelines memscore  # note\n```\nand `kedro run --params dataset=<name>`"
            " or `WEMEM_DEBUG=1 kedro run ...`")
    assert readme_commands(text) == [["kedro", "run", "--pipelines", "memscore"]]


def _dry(args: list[str]) -> list[str]:
    if args[1] != "run":
        return [KEDRO, *args[1:], "--help"]
    rest = [a for a in args[2:] if not a.startswith("--runner=")]
    if "--runner" in rest:  # `--runner X`: drop both words
        i = rest.index("--runner")
        rest = rest[:i] + rest[i + 2:]
    return [KEDRO, "run", *rest, "--runner=wemem.runners.DryRunner"]


def test_every_readme_kedro_command_parses_and_validates(tmp_path):
    # what it catches: a README command that Kedro's CLI rejects (e.g. a list in --params, which
    # Kedro 1.7 splits at commas), an unknown pipeline, namespace, environment or runner, or a
    # parameter the schema refuses
    project = make_project(tmp_path)
    failures = []
    for args in readme_commands((REPO / "README.md").read_text()):
        proc = subprocess.run(_dry(args), cwd=project, env=project_env(WEMEM_MLFLOW_DISABLE="1"),
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            failures.append(f"{' '.join(args)}\n{(proc.stdout + proc.stderr)[-1500:]}")
    assert not failures, "README commands that fail:\n\n" + "\n\n".join(failures)
