"""Fixture builders that write small datasets in their REAL on-disk formats.

Each builder writes into a given folder exactly what the corresponding loader in
``wemem.ml.data`` reads: CSV inside a tgz (Location, Purchase), Texas feats/labels inside a tgz,
CIFAR pickle batches (dicts of numpy arrays), CINIC-10 ImageFolder PNGs.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_LOCATION = REPO_ROOT / ".." / "shared" / "datasets" / "location" / "dataset_location.tgz"


@pytest.fixture(scope="module")
def one_thread():
    """Torch with one intra-op thread for a module's tests (``pytestmark =
    pytest.mark.usefixtures("one_thread")``): tiny models gain nothing from more, and on a shared
    2-core machine an OpenMP team whose second core is busy stalls at every barrier."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------
# plain helpers (importable as fixtures below)
# ------------------------------------------------------------------------------------------


def write_tgz(path: Path, members: dict[str, bytes]) -> Path:
    """Write a gzip-compressed tar archive holding ``members`` (name -> content)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def csv_bytes(labels: np.ndarray | None, features: np.ndarray, *, quote_labels: bool) -> bytes:
    """Comma-separated rows: optional label first (quoted like Location's "13"), then features."""
    rows = []
    for i in range(features.shape[0]):
        cells = [str(int(v)) for v in features[i]]
        if labels is not None:
            lab = str(int(labels[i]))
            cells.insert(0, f'"{lab}"' if quote_labels else lab)
        rows.append(",".join(cells))
    return ("\n".join(rows) + "\n").encode()


def tabular_arrays(n: int, d: int, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random binary features and 1-based labels covering every class."""
    rng = np.random.default_rng(seed)
    features = (rng.random((n, d)) < 0.3).astype(np.int64)
    labels = np.arange(n) % num_classes + 1
    rng.shuffle(labels)
    return labels, features


def make_location(raw_dir: Path, n: int = 120, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    labels, feats = tabular_arrays(n, 446, 30, seed)
    path = write_tgz(raw_dir / "dataset_location.tgz",
                     {"bangkok": csv_bytes(labels, feats, quote_labels=True)})
    return path, labels, feats


def make_purchase(raw_dir: Path, n: int = 220, seed: int = 1) -> tuple[Path, np.ndarray, np.ndarray]:
    labels, feats = tabular_arrays(n, 600, 100, seed)
    path = write_tgz(raw_dir / "dataset_purchase.tgz",
                     {"dataset_purchase": csv_bytes(labels, feats, quote_labels=False)})
    return path, labels, feats


def make_texas(raw_dir: Path, n: int = 120, seed: int = 2,
               labels_override: np.ndarray | None = None) -> tuple[Path, np.ndarray, np.ndarray]:
    labels, feats = tabular_arrays(n, 6169, 100, seed)
    if labels_override is not None:
        labels = labels_override
    lab_txt = ("\n".join(str(int(v)) for v in labels) + "\n").encode()
    path = write_tgz(raw_dir / "dataset_texas.tgz",
                     {"texas/100/feats": csv_bytes(None, feats, quote_labels=False),
                      "texas/100/labels": lab_txt})
    return path, labels, feats


def cifar_batch(n: int, num_classes: int, seed: int, *, label_key: str,
                bytes_keys: bool) -> dict:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, num_classes, size=n)]
    batch = {"batch_label": "fixture batch", "data": data, label_key: labels,
             "filenames": [f"img_{seed}_{i}.png" for i in range(n)]}
    if label_key == "fine_labels":
        batch["coarse_labels"] = [v // 5 for v in labels]
    if bytes_keys:  # what a Python-2-era pickle looks like when read with encoding="bytes"
        batch = {k.encode(): v for k, v in batch.items()}
    return batch


def write_pickle(path: Path, obj, protocol: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def make_cifar10(raw_dir: Path, n_per_batch: int = 8) -> dict[str, dict]:
    folder = raw_dir / "cifar-10-batches-py"
    batches = {}
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        batches[name] = cifar_batch(n_per_batch, 10, seed=i, label_key="labels", bytes_keys=False)
        write_pickle(folder / name, batches[name], protocol=2)
    return batches


def make_cifar100(raw_dir: Path, n_train: int = 30, n_test: int = 10) -> dict[str, dict]:
    folder = raw_dir / "cifar-100-python"
    batches = {
        "train": cifar_batch(n_train, 100, seed=10, label_key="fine_labels", bytes_keys=True),
        "test": cifar_batch(n_test, 100, seed=11, label_key="fine_labels", bytes_keys=True),
    }
    for name, b in batches.items():
        write_pickle(folder / name, b, protocol=pickle.HIGHEST_PROTOCOL)
    return batches


CINIC_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]


def make_cinic10(raw_dir: Path, n_train: int = 3, n_test: int = 2,
                 classes: list[str] | None = None) -> dict[str, dict[str, list[np.ndarray]]]:
    """ImageFolder PNGs; returns {part: {class: [HWC uint8 images in sorted file order]}}."""
    from PIL import Image

    classes = classes or CINIC_CLASSES
    rng = np.random.default_rng(3)
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    for part, count in (("train", n_train), ("test", n_test)):
        out[part] = {}
        for c in classes:
            d = raw_dir / part / c
            d.mkdir(parents=True, exist_ok=True)
            out[part][c] = []
            for i in range(count):
                img = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                Image.fromarray(img).save(d / f"{c}_{i:03d}.png")
                out[part][c].append(img)
    return out


# ------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never touch the network: every download attempt fails at once."""
    from wemem.ml.data import raw  # every download of the loaders goes through this module

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(raw, "_fetch_url", refuse)
    monkeypatch.setattr(raw, "_torchvision_cifar_download", refuse)


@pytest.fixture
def real_location_archive() -> Path:
    if not REAL_LOCATION.is_file():
        pytest.skip(f"real Location archive not available at {REAL_LOCATION.resolve()} "
                    "(shared/datasets/location is absent on this machine)")
    return REAL_LOCATION.resolve()


@pytest.fixture
def fx():
    """The builders above, as one namespace (avoids importing conftest from test modules)."""
    import types

    names = ["write_tgz", "csv_bytes", "tabular_arrays", "make_location", "make_purchase",
             "make_texas", "cifar_batch", "write_pickle", "make_cifar10", "make_cifar100",
             "make_cinic10", "CINIC_CLASSES", "REAL_LOCATION"]
    return types.SimpleNamespace(**{n: globals()[n] for n in names})
