"""Benchmark: SAMIA's Transformer written out (``wemem.ml.attacks.classifier.SamiaTransformer``:
fused QKV, attention by two batched matmuls, 16-bit dropout draws) against the same
architecture with torch's ``nn.TransformerEncoderLayer`` blocks (pre-LN, ``bernoulli_``
dropout), in one run, on the CPU.

Both are trained by the project's ``fit_attack_model`` with the default run's attack settings
(``conf/base/parameters_mia_evaluation.yml``: 15 epochs, batch 256, SGD lr 0.02) on the same
seeded synthetic SAMIA features shaped like the default run's (2 shadows × 2074 samples,
C = 10 tokens of (p, sensitivity, one-hot)); members have a sharper softmax on their label.
Timing alternates (torch, ours, ours, torch) and reports the median; the attack AUC on a
held-out synthetic target is recorded for both, to show the rewrite learns as well.

    python benchmarks/samia_speed.py [--threads 1] [--repeats 2] [--epochs 15]

Writes benchmarks/results/samia_speed.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from wemem.ml.attacks import AttackModelSettings
from wemem.ml.attacks.classifier import SamiaTransformer, fit_attack_model, predict_member

RESULTS = Path(__file__).resolve().parent / "results" / "samia_speed.json"


class TorchEncoderSamia(SamiaTransformer):
    """The baseline: the same model with torch's pre-LN ``nn.TransformerEncoderLayer`` blocks."""

    def __init__(self, num_classes: int, width: int = 64, layers: int = 3, heads: int = 4,
                 dropout: float = 0.2):
        super().__init__(num_classes, width, layers, heads, dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model=width, nhead=heads, dim_feedforward=2 * width,
                                       dropout=dropout, batch_first=True, norm_first=True)
            for _ in range(layers)
        )


def synthetic_samia(n: int, c: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """SAMIA features (n, 3c) and member labels: half members, whose logits on their label
    are raised by 1.5 on average."""
    labels = rng.integers(0, c, n)
    member = rng.random(n) < 0.5
    logits = rng.normal(0.0, 1.0, (n, c))
    logits[np.arange(n), labels] += 1.0 + 1.5 * member + rng.normal(0, 1.0, n)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    sens = p * (1.0 - p) * (1.0 + 0.1 * rng.normal(size=(n, c)))
    onehot = np.eye(c)[labels]
    x = np.stack([p, sens, onehot], axis=2).reshape(n, 3 * c).astype(np.float32)
    return x, member


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each side (alternated)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--n-train", type=int, default=2 * 2074, help="pooled shadow rows")
    ap.add_argument("--n-test", type=int, default=2074, help="target rows")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the pipeline's hook does
    rng = np.random.default_rng(args.seed)
    x_tr, y_tr = synthetic_samia(args.n_train, args.classes, rng)
    x_te, y_te = synthetic_samia(args.n_test, args.classes, rng)
    cfg = AttackModelSettings(epochs=args.epochs, lr=0.02, momentum=0.9, weight_decay=5e-4, batch_size=256,
                              milestones=[int(args.epochs * 2 / 3), int(args.epochs * 13 / 15)])
    sides = {"torch_encoder": TorchEncoderSamia, "ours": SamiaTransformer}
    order = (["torch_encoder", "ours", "ours", "torch_encoder"] * args.repeats)[: 2 * args.repeats]
    runs: dict[str, list[dict]] = {k: [] for k in sides}
    for side in order:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        model = fit_attack_model(lambda: sides[side](args.classes), x_tr, y_tr, cfg, device="cpu", seed=args.seed)
        seconds = time.perf_counter() - t0
        scores, _ = predict_member(model, x_te, "cpu")
        runs[side].append({"seconds": round(seconds, 3), "auc": round(float(roc_auc_score(y_te, scores)), 4),
                           "load_before": round(load, 2)})
        print(f"{side:14s} {seconds:7.2f} s  AUC {runs[side][-1]['auc']:.4f}  (load {load:.2f})", flush=True)
    steps = args.epochs * -(-args.n_train // cfg.batch_size)
    summary = {k: {"seconds": round(statistics.median(r["seconds"] for r in v), 3),
                   "ms_per_step": round(1000 * statistics.median(r["seconds"] for r in v) / steps, 2),
                   "auc": v[0]["auc"], "runs": v} for k, v in runs.items()}
    result = {
        "benchmark": "samia_speed",
        "what": "SAMIA attack-model training (fit_attack_model), torch nn.TransformerEncoder vs the "
                "written-out encoder with 16-bit dropout draws, same architecture and settings",
        "threads": args.threads, "epochs": args.epochs, "steps": steps, "n_train": args.n_train,
        "classes": args.classes, "seed": args.seed, "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
        **summary,
        "speedup": round(summary["torch_encoder"]["seconds"] / summary["ours"]["seconds"], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"speed-up {result['speedup']}x -> {args.out}")
    return result


if __name__ == "__main__":
    main()
