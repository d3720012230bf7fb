"""Layer 2: influence against real leave-one-out retraining on digits (the paper's Fig 2 check)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import pearsonr

import influence_widgets as iw
from influence_widgets.analysis import actual_removal_effects


@pytest.mark.slow
def test_predicted_removal_effect_tracks_leave_one_out_on_digits_lr():
    """3 test points, the 40 largest |influence| each, retrained warm-started: Pearson R >= 0.99."""
    data = iw.datasets.digits()
    model = iw.models.logistic_regression(data)
    report = iw.train(model, data, l2=0.01, progress=False)
    assert report.converged
    inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)
    x_test, y_test = data.X_test[:3], data.y_test[:3]
    predicted = inf.predicted_removal_effect(x_test, y_test)  # (3, n)
    before = [p.detach().clone() for p in model.parameters()]

    for t in range(3):
        top = torch.argsort(predicted[t].abs(), descending=True)[:40]
        actual, drift = actual_removal_effects(
            model,
            (data.X_train, data.y_train),
            x_test[t : t + 1],
            y_test[t : t + 1],
            top.tolist(),
            l2=0.01,
            progress=False,
        )
        assert abs(float(drift[0])) < 1e-6  # theta_hat was already the minimum
        r = pearsonr(predicted[t, top].numpy(), actual[:, 0].numpy()).statistic
        assert r >= 0.99, f"test point {t}: Pearson R {r:.4f} < 0.99"

    after = list(model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
