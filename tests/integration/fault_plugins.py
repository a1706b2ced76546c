"""Test-only plugins for fault tests, registered on import (as a project module would): a
defense that always raises while fine-tuning, and one whose ``preflight`` refuses every model.

A subprocess imports this module and then starts Kedro's CLI, so ``kedro run`` sees them:
``python -c "import tests.integration.fault_plugins as f; f.main()" run ...``.
"""

from __future__ import annotations

from wemem.ml.defenses import DEFENSES, Base


def register() -> None:
    if "explode" in DEFENSES:
        return

    @DEFENSES.register("explode", label="Explode", family="regulariser")
    class Explode(Base):
        """Raises on the first training step (not a NaN loss: an ordinary exception)."""

        name = "explode"

        def loss(self, model, logits, y, idx, epoch):
            raise RuntimeError("boom: the test defense always fails")

    @DEFENSES.register("picky", label="Picky", family="regulariser")
    class Picky(Base):
        """Refuses every model before any work (``preflight``)."""

        name = "picky"

        @classmethod
        def preflight(cls, model: str, settings) -> str | None:
            return f"picky cannot train {model}"


def unregister() -> None:
    for name in ("explode", "picky"):
        if name in DEFENSES:
            DEFENSES.remove(name)


def main() -> None:
    """Kedro's CLI with the plugins registered."""
    from kedro.framework.cli.cli import main as kedro_main

    register()
    kedro_main()
