"""Does an influence variant find flipped labels better than training loss? (issue 16, Sec 5.4)

The mislabel benchmark (``benchmarks/mislabel.py``) finds training loss ahead of self-influence on
logistic regression. This script scores two variants that use influence to estimate the loss a
point would have if it were left out (a leave-one-out loss, which needs no test data), against the
two rankings ``iw.review_order`` offers, on the same flips (digits, ``flip_labels`` with the same
seeds, l2 = 0.01):

- ``loss``: L(z_i, theta_hat);
- ``self_influence``: |I_up,loss(z_i, z_i)| = grad L_i^T H^-1 grad L_i;
- ``loo_loss_linear``: L(z_i, theta_hat) + |I_up,loss(z_i, z_i)| / n, the first-order change of
  z_i's own loss when it is removed (upweighting by eps = -1/n);
- ``loo_loss_params``: L(z_i, theta_hat + H^-1 grad L_i / n), z_i's loss at the parameters that
  I_up,params predicts without it (theta_{-i} - theta_hat = -I_up,params(z_i) / n), exact in the
  loss, linear only in the parameters.

Per (noise, method): ROC AUC for telling flipped from clean points and the fraction of flips among
the first 10% and 30% of the ranking, means over seeds. Digits only: ``loo_loss_params`` holds the
n x p matrix I_up,params (1,300 x 650 here; 630 MB for Fashion-MNIST's 10,000 x 7,850).

    .venv/bin/python benchmarks/mislabel_variants.py --json benchmarks/results/mislabel_variants.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from machine import machine_info
from sklearn.metrics import roc_auc_score

import influence_widgets as iw
from influence_widgets.analysis.mislabel import flip_labels, training_losses

L2 = 0.01
NOISES = {"uniform": (0.1, None), "systematic 1->8": (0.3, (1, 8))}
CHECKED = (0.1, 0.3)


def variant_scores(inf: iw.Influence) -> dict[str, torch.Tensor]:
    """{method: (n,) score, larger = more suspect} for the four rankings."""
    n = inf.n
    loss = training_losses(inf).detach()
    self_inf = inf.self_influence().abs().detach()
    obj = inf.objective
    # theta_{-i} ~ theta_hat - I_up,params(z_i) / n  (removal = upweighting by -1/n)
    theta_without = obj.theta.detach() - inf.influence_on_params().detach() / n
    X, y = inf.train.X, inf.train.y
    with torch.no_grad():
        loo = torch.stack(
            [
                obj.loss(
                    theta_without[i], obj.cast_inputs(X[i : i + 1]), obj.cast_targets(y[i : i + 1])
                )
                for i in range(n)
            ]
        ).reshape(n)
    return {
        "loss": loss,
        "self_influence": self_inf,
        "loo_loss_linear": loss + self_inf / n,
        "loo_loss_params": loo,
    }


def measure(seeds: int) -> list[dict]:
    """One row per (noise, method): AUC and flips found at 10% and 30%, means and per seed."""
    data = iw.datasets.digits()
    rows = []
    for noise, (fraction, pair) in NOISES.items():
        per: dict[str, dict[str, list[float]]] = {}
        for seed in range(seeds):
            y = data.y_train
            noisy, flipped = flip_labels(y, data.n_classes, fraction, pair, seed)
            model = iw.models.logistic_regression(data)
            iw.train(model, (data.X_train, noisy), l2=L2, progress=False)
            inf = iw.Influence(model, (data.X_train, noisy), l2=L2, progress=False)
            is_flipped = torch.zeros(len(y), dtype=torch.bool)
            is_flipped[flipped] = True
            for method, score in variant_scores(inf).items():
                cell = per.setdefault(method, {"auc": []} | {f"found_{c}": [] for c in CHECKED})
                cell["auc"].append(float(roc_auc_score(is_flipped.numpy(), score.numpy())))
                order = torch.argsort(score, descending=True, stable=True)
                for c in CHECKED:
                    top = order[: round(c * len(y))]
                    cell[f"found_{c}"].append(float(is_flipped[top].sum()) / len(flipped))
        for method, cell in per.items():
            rows.append(
                {"dataset": "digits", "noise": noise, "method": method}
                | {key: float(np.mean(values)) for key, values in cell.items()}
                | {"per_seed": cell}
            )
    return rows


def markdown_table(report: dict) -> str:
    lines = [
        "| noise | method | AUC | found @ 10% | found @ 30% |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['noise']} | {r['method']} | {r['auc']:.4f} | {r['found_0.1']:.1%} | "
        f"{r['found_0.3']:.1%} |"
        for r in report["rows"]
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = {
        "command": "benchmarks/mislabel_variants.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info("cpu", "cores", "threads", "torch", "python", "date"),
        "l2": L2,
        "seeds": list(range(args.seeds)),
        "rows": measure(args.seeds),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
