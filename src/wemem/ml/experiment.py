"""Experiment glue shared by the pipelines: roles (victim, shadows), their data, their models.

Pure library code (no Kedro): it turns the stored arrays, the split index arrays and the score
table into device tensors per model role, and model files into live modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .models import build_model

__all__ = [
    "describe_data",
    "RoleData",
    "roles",
    "role_data",
    "iter_roles",
    "pool_positions",
    "role_scores",
    "make_model",
    "models_payload",
    "load_models",
    "role_seed",
]


def role_seed(seed: int, index: int, stage: str) -> int:
    """The seed of role number ``index`` (victim 0, shadow_i i+1) in one stage of the run:
    ``train`` (training the victim/shadows) or ``prune`` (pruning + fine-tuning them)."""
    return int(seed) + 1000 * index + {"train": 0, "prune": 7}[stage]


@dataclass
class RoleData:
    """Device tensors of one model role: its train (members), dev and test (non-members) sets."""

    name: str
    train: tuple[torch.Tensor, torch.Tensor]
    dev: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    train_rows: np.ndarray  # row indices into the raw dataset


def describe_data(raw: Any, raw_dir: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays to store of a loaded dataset (features, labels, and the test mask of datasets
    with their own test set) and what the data is (``dataset_info``)."""
    arrays = {"features": raw.features, "labels": raw.labels}
    if raw.test_mask is not None:
        arrays["test_mask"] = raw.test_mask
    info = {
        "name": raw.name,
        "kind": raw.kind,
        "num_samples": int(raw.labels.shape[0]),
        "input_shape": list(raw.features.shape[1:]),
        "num_classes": int(raw.num_classes),
        "mean": list(raw.mean) if raw.mean is not None else None,
        "std": list(raw.std) if raw.std is not None else None,
        "raw_dir": raw_dir,
    }
    return arrays, info


def roles(splits: dict[str, np.ndarray]) -> list[str]:
    """``victim`` then ``shadow_0`` … in numeric order."""
    names = {k.split("/")[0] for k in splits if "/" in k}
    shadows = sorted((n for n in names if n.startswith("shadow_")), key=lambda n: int(n.split("_")[1]))
    if "victim" not in names or not shadows:
        raise ValueError(f"splits hold roles {sorted(names)}; expected 'victim' and at least one 'shadow_<i>'")
    return ["victim", *shadows]


def role_data(
    arrays: dict[str, np.ndarray], splits: dict[str, np.ndarray], role: str, device: torch.device
) -> RoleData:
    """Moves one role's three sets to the device (features keep their stored dtype)."""
    x = torch.as_tensor(arrays["features"])
    y = torch.as_tensor(arrays["labels"], dtype=torch.long)

    def part(key: str) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(splits[f"{role}/{key}"], dtype=torch.long)
        return x[idx].to(device), y[idx].to(device)

    return RoleData(role, part("train"), part("dev"), part("test"), np.asarray(splits[f"{role}/train"]))


def iter_roles(
    arrays: dict[str, np.ndarray], splits: dict[str, np.ndarray], device: torch.device
) -> Iterator[RoleData]:
    for role in roles(splits):
        yield role_data(arrays, splits, role, device)


def pool_positions(splits: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Positions in the train pool of raw ``rows`` (which must all be in the pool)."""
    pool = np.asarray(splits["train_pool"])
    inverse = np.full(int(max(pool.max(), np.max(rows))) + 1, -1, dtype=np.int64)
    inverse[pool] = np.arange(pool.size)
    pos = inverse[rows]
    if (pos < 0).any():
        raise ValueError("some training rows are not in the train pool; were splits and scores made together?")
    return pos


def role_scores(scores: pd.DataFrame, splits: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Normalised mem-scores of raw ``rows``, from a table indexed by train-pool position."""
    table = scores.sort_values("index")
    if len(table) != len(splits["train_pool"]):
        raise ValueError(
            f"the score table has {len(table)} rows but the train pool {len(splits['train_pool'])}; "
            "re-run memscore for this dataset and split"
        )
    return table["score"].to_numpy(dtype=np.float64)[pool_positions(splits, rows)]


def make_model(model: str, info: dict[str, Any], device: torch.device) -> nn.Module:
    """A fresh ``model`` (a :data:`wemem.ml.models.MODELS` name) for the data described by ``info``."""
    kwargs: dict[str, Any] = {}
    if info.get("kind") == "image":
        kwargs = {"mean": info["mean"], "std": info["std"]}
    return build_model(model, tuple(info["input_shape"]), int(info["num_classes"]), **kwargs).to(device)


def models_payload(models: dict[str, nn.Module], meta: dict[str, Any]) -> dict[str, Any]:
    """What :class:`wemem.datasets.TorchModelsDataset` saves."""
    return {"meta": meta, "models": {name: m.state_dict() for name, m in models.items()}}


def load_models(payload: dict[str, Any], model: str, info: dict[str, Any], device: torch.device) -> dict[str, nn.Module]:
    """Rebuilds the ``model`` modules of a saved payload (evaluation mode)."""
    out = {}
    for name, state in payload["models"].items():
        net = make_model(model, info, device)
        net.load_state_dict(state)
        net.eval()
        out[name] = net
    return out
