"""Synthetic combination results (the shape ``attack_record`` gives) for report and plot tests."""

from __future__ import annotations

from typing import Any

import numpy as np

ATTACK_NAMES = ["conf", "entr", "mentr", "hconf", "nn", "top3_nn", "ci_nn", "samia", "lira", "rmia"]


def fake_result(variant: str, test_acc: float, attack_acc: float, *, method: str | None = "l1_unstructured",
                sparsity: float | None = 0.6, chosen: str = "conf", seed: int = 0, n_non: int = 400,
                status: str = "ok") -> dict[str, Any]:
    """One combination: every attack at ``attack_acc - 0.01·i`` except the chosen one at
    ``attack_acc``; ROC curves y = x^p with AUC = 1/(p+1)."""
    rng = np.random.default_rng(seed)
    attacks, roc = {}, {}
    for i, a in enumerate(ATTACK_NAMES):
        acc = attack_acc if a == chosen else attack_acc - 0.01 * (i + 1)
        p = max(0.05, (1 - acc) / acc)
        fpr = np.concatenate([[0.0], np.logspace(np.log10(1 / n_non), 0, 40)])
        attacks[a] = {"balanced_acc": acc, "auc": 1 / (p + 1), "tpr_at_1fpr": 0.01 ** p, "tpr_at_0.1fpr": np.nan,
                      "eps_lb": 0.1, "tpr_high": min(1.0, acc + 0.1), "tpr_low": acc - 0.1, "auc_high": 0.6,
                      "auc_low": 0.55, "fpr_decision": 1 - acc}
        roc[a] = {"fpr": fpr.tolist(), "tpr": (fpr ** p).tolist()}
    namespace = variant if method is None else f"{method}_s{round(sparsity * 100):02d}.{variant}"
    return {"namespace": namespace, "dataset": "mnist1d", "model": "mlp", "method": method, "sparsity": sparsity,
            "variant": variant, "defense": "base" if variant == "one_shot" else variant, "status": status,
            "test_acc": test_acc + rng.normal(0, 0.0), "train_acc": 0.99, "n_members": 500, "n_nonmembers": n_non,
            "attacks": attacks if status == "ok" else {}, "roc": roc if status == "ok" else {},
            "chosen_attack": chosen if status == "ok" else "", "finetune_seconds": 3.5, "tau": 0.6, "n_high": 7,
            "settings_text": f"{variant}: lambda_g=0.0005", "settings": {"lambda_g": 0.0005}}


def default_grid() -> list[dict[str, Any]]:
    """The default run's ten rows: unpruned, one-shot, eight defenses at l1_unstructured 60%."""
    rows = [fake_result("unpruned", 0.80, 0.70, method=None, sparsity=None),
            fake_result("one_shot", 0.76, 0.66)]
    for d, t, a in [("base", 0.78, 0.68), ("rsw", 0.775, 0.60), ("rmr", 0.77, 0.62), ("swmr", 0.75, 0.55),
                    ("ppb", 0.78, 0.66), ("adv", 0.70, 0.52), ("dpsgd", 0.60, 0.50), ("relaxloss", 0.79, 0.64)]:
        rows.append(fake_result(d, t, a))
    return rows
