"""``TorchModelsDataset``: named model state dicts plus plain metadata, loaded safely."""

from __future__ import annotations

import io
import pickle
import zipfile
from typing import Any

import torch
from kedro.io.core import DatasetError

from ._base import FileDataset
from .numpy_dataset import zip_problem


class TorchModelsDataset(FileDataset):
    """Saves ``{"meta": {...}, "models": {name: state_dict}}`` with ``torch.save`` and loads
    it with ``torch.load(weights_only=True)``: tensors and plain containers only, so a model
    file can never execute code when loaded. Tensors are loaded onto the CPU.

    Example catalog entry::

        original_models:
          type: wemem.datasets.TorchModelsDataset
          filepath: data/06_models/original_models.pt
          versioned: true
    """

    def _check(self, raw: bytes) -> str | None:
        return zip_problem(raw)

    def _deserialise(self, raw: bytes, path: str) -> dict[str, Any]:
        try:
            data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise DatasetError(
                f"{path} holds objects other than tensors and plain containers and was refused "
                f"(weights_only=True): {exc}. Only load model files this project wrote."
            ) from exc
        except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
            raise DatasetError(
                f"{path} is not a readable model file ({exc}); it may be truncated or tampered with. "
                "Delete this version and re-run the pipeline that produces it."
            ) from exc
        if not isinstance(data, dict) or "models" not in data:
            raise DatasetError(f"{path} is not a WeMem model file: expected a dict with a 'models' entry")
        return data

    def _serialise(self, data: dict[str, Any]) -> bytes:
        if not isinstance(data, dict) or "models" not in data:
            raise DatasetError("TorchModelsDataset saves {'meta': {...}, 'models': {name: state_dict}}")
        cpu = {
            "meta": data.get("meta", {}),
            "models": {
                name: {k: v.detach().cpu() for k, v in sd.items()} for name, sd in data["models"].items()
            },
        }
        buf = io.BytesIO()
        torch.save(cpu, buf)
        return buf.getvalue()
