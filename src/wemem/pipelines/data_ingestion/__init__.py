"""Raw data → features, labels and the victim/shadow splits (SPEC §2)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
