"""Model zoo and the training loop."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wemem.ml.models import build_model, prunable_modules
from wemem.ml.train import Strategy, TrainConfig, accuracy, fit, predict_proba, resolve_device


@pytest.mark.parametrize(
    "arch,shape,prunable",
    [("column_fc", (446,), ["fc1", "fc2"]), ("resnet18", (3, 32, 32), None), ("vgg16_bn", (3, 32, 32), None),
     ("densenet121", (3, 32, 32), None)],
)
def test_model_shapes_and_prunable_layers(arch, shape, prunable):
    torch.manual_seed(0)
    model = build_model(arch, shape, 10, **({"mean": (0.5,) * 3, "std": (0.25,) * 3} if len(shape) == 3 else {}))
    x = torch.randint(0, 256, (2, *shape), dtype=torch.uint8) if len(shape) == 3 else torch.rand(2, *shape)
    model.eval()
    assert model(x).shape == (2, 10)
    names = [n for n, _ in prunable_modules(model)]
    if prunable is not None:
        assert names == prunable
    else:  # every conv/linear except the classifier
        assert len(names) > 10 and all(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for _, m in prunable_modules(model))
        classifier = list(model.named_modules())[-1][0]
        assert classifier not in names


def test_image_models_normalise_uint8_like_scaled_floats():
    torch.manual_seed(0)
    model = build_model("resnet18", (3, 32, 32), 10, mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.2)).eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(model(x), model(x.float() / 255))


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="column_fc"):
        build_model("resnet19", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="image"):
        build_model("column_fc", (3, 32, 32), 10)


def test_device_auto_is_cpu_without_cuda():
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def _blobs(n=600, d=10, c=3, seed=0):
    g = np.random.default_rng(seed)
    centers = g.normal(0, 3, (c, d))
    y = g.integers(0, c, n)
    x = (centers[y] + g.normal(0, 1, (n, d))).astype(np.float32)
    return torch.tensor(x), torch.tensor(y)


def test_fit_learns_and_keeps_the_best_dev_checkpoint():
    x, y = _blobs()
    model = build_model("column_fc", (10,), 3)
    cfg = TrainConfig(epochs=30, patience=3, seed=0, progress=False)
    res = fit(model, (x[:400], y[:400]), (x[400:500], y[400:500]), cfg, test=(x[500:], y[500:]))
    assert accuracy(model, x[500:], y[500:]) > 0.9
    assert res.best_dev_acc == pytest.approx(max(h["dev_acc"] for h in res.history))
    assert res.epochs_run <= 30 and res.epochs_run - 1 - res.best_epoch <= 3
    assert accuracy(model, x[400:500], y[400:500]) == pytest.approx(res.best_dev_acc)


def test_fit_is_deterministic_for_a_seed():
    x, y = _blobs()
    outs = []
    for _ in range(2):
        torch.manual_seed(1)
        model = build_model("column_fc", (10,), 3)
        fit(model, (x, y), None, TrainConfig(epochs=3, seed=5, progress=False))
        outs.append(predict_proba(model, x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


class _Exploding(Strategy):
    def loss(self, model, logits, y, idx, epoch):
        return F.cross_entropy(logits, y) * float("nan")


def test_diverging_loss_raises_floating_point_error():
    x, y = _blobs()
    with pytest.raises(FloatingPointError, match="NaN|nan"):
        fit(build_model("column_fc", (10,), 3), (x, y), None, TrainConfig(epochs=2, progress=False), _Exploding())
