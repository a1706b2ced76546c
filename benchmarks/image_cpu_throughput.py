"""Benchmark: CPU training and inference throughput of the three image models (CIFAR shape).

For each of ResNet18, VGG16-BN and DenseNet121 (the project's CIFAR variants, 3x32x32 uint8
input, 10 classes): training samples/s (forward, cross-entropy, backward, Adam step, as
``train.fit`` does per batch) and inference samples/s (forward under ``torch.no_grad``, as the
attacks' signal extraction does), each after one untimed warm-up step. The image environments'
time estimates (conf/image_*/parameters.yml, README "Image experiments") are these rates
applied to the number of sample-steps a run makes (``benchmarks/image_run_cost.py``).

    python benchmarks/image_cpu_throughput.py [--threads 2] [--batch 128] [--steps 3]
        [--out benchmarks/results/image_cpu_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from wemem.ml.models import build_model

RESULTS = Path(__file__).resolve().parent / "results" / "image_cpu_throughput.json"
MODELS = ("resnet18", "vgg16_bn", "densenet121")


def measure(arch: str, batch: int, steps: int, seed: int = 0) -> dict[str, float]:
    torch.manual_seed(seed)
    model = build_model(arch, (3, 32, 32), 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    model.train()
    train_step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    train_s = (time.perf_counter() - start) / steps
    model.eval()
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
        infer_s = (time.perf_counter() - start) / steps
    return {"train_samples_per_s": batch / train_s, "infer_samples_per_s": batch / infer_s,
            "train_step_s": train_s, "batch": batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {"device": "cpu", "threads": args.threads, "cpu": platform.processor() or platform.machine(),
           "torch": torch.__version__, "models": {}}
    for arch in MODELS:
        out["models"][arch] = measure(arch, args.batch, args.steps)
        print(arch, {k: round(v, 2) for k, v in out["models"][arch].items()}, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
