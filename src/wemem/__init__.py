"""WeMem: defending iteratively pruned networks against membership inference (NDSS 2025)."""

__version__ = "0.1.0"
