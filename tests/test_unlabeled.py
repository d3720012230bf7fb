"""Test points without a label (issue 15/16): explained for the predicted class,
L(z_test, theta_hat) with z_test = (x_test, y_hat), y_hat = argmax_c p(c | x_test, theta_hat)."""

from __future__ import annotations

import pytest
import torch

import influence_widgets as iw


@pytest.fixture(scope="module")
def cancer():
    torch.set_num_threads(1)
    data = iw.datasets.breast_cancer()
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)
    return data, model, inf


def _predicted(model, x):
    with torch.no_grad():
        return model(x.to(next(model.parameters()).dtype)).argmax(dim=1)


def test_no_label_scores_equal_the_scores_of_the_predicted_labels(cancer, untouched):
    data, model, inf = cancer
    x = data.X_test[:6]
    y_hat = _predicted(model, x)
    assert torch.equal(inf.predicted_labels(x), y_hat)
    with untouched(model, data.X_test, data.y_test, inf.train.X, inf.train.y):
        without = inf.predicted_removal_effect(x)
        top = inf.top(x, k=4)
    torch.testing.assert_close(without, inf.predicted_removal_effect(x, y_hat))
    torch.testing.assert_close(inf.influence_on_loss(x, None), inf.influence_on_loss(x, y_hat))
    assert torch.equal(top.helpful, inf.top(x, y_hat, k=4).helpful)
    torch.testing.assert_close(
        inf.perturbation_influence(x[:2], None, [0, 5]),
        inf.perturbation_influence(x[:2], y_hat[:2], [0, 5]),
    )


def test_no_label_with_a_regression_loss_says_to_pass_the_targets():
    X = torch.randn(20, 3, dtype=torch.float64)
    model = torch.nn.Linear(3, 1, dtype=torch.float64)
    y = X.sum(1, keepdim=True)
    iw.train(model, (X, y), loss="mse", l2=0.1, progress=False)
    inf = iw.Influence(model, (X, y), loss="mse", l2=0.1, progress=False)
    with pytest.raises(ValueError, match=r"^y_test: None .*classification loss"):
        inf.top(X[:2])


def test_one_point_without_its_batch_dimension_is_told_to_use_x_none(cancer):
    data, _, inf = cancer
    one = r"^x_test: expected a batch with a leading dimension; for one point pass x\[None\] "
    with pytest.raises(ValueError, match=one):
        inf.top(data.X_test[0], None, k=3)
    with pytest.raises(ValueError, match=one.replace("x_test", "x_test, y_test")):
        inf.top(data.X_test[0], data.y_test[0], k=3)
    assert inf.top(data.X_test[0][None], None, k=3).helpful.shape == (1, 3)


def test_validate_loo_without_a_label_checks_the_predicted_class(cancer, untouched):
    data, model, inf = cancer
    x = data.X_test[:1]
    with untouched(model, data.X_test, data.y_test):
        result = iw.validate_loo(inf, x, None, n_remove=3, progress=False)
    same = iw.validate_loo(inf, x, _predicted(model, x), n_remove=3, progress=False)
    assert result.removed.tolist() == same.removed.tolist()
    torch.testing.assert_close(torch.as_tensor(result.actual), torch.as_tensor(same.actual))


@pytest.fixture(scope="module")
def unlabeled_explorer(cancer):
    data, model, inf = cancer
    ex = iw.InfluenceExplorer(
        inf,
        x_test=data.X_test,
        kind="tabular",
        class_names=data.class_names,
        feature_names=data.feature_names,
        k=4,
    )
    return ex.wait_ready()


def test_explorer_without_labels_explains_the_predicted_class(cancer, unlabeled_explorer):
    data, model, inf = cancer
    ex = unlabeled_explorer
    assert not ex.labelled
    i = int((_predicted(model, data.X_test) != data.y_test).nonzero()[0])  # a misclassified one
    y_hat = int(_predicted(model, data.X_test[i : i + 1])[0])
    name = data.class_names[y_hat]
    text = ex.explain(i)
    assert text.startswith(f"No label given: explained for the predicted class {name}.")
    assert text.count("\n") == 1  # two lines
    assert f"helpful points support predicting {name}" in text
    assert "Misclassified" not in text and "true label" not in text
    ex.selected = i
    expected = inf.top(data.X_test[i : i + 1], k=4)
    assert [it["index"] for it in ex.panel["helpful"]] == expected.helpful[0].tolist()
    assert not any(item["wrong"] for item in ex.gallery)


def test_explorer_with_labels_keeps_explaining_the_true_label(cancer):
    data, model, inf = cancer
    ex = iw.InfluenceExplorer(inf, data, k=4).wait_ready()
    wrong = (_predicted(model, data.X_test) != data.y_test).nonzero()
    assert ex.labelled
    assert ex.explain(int(wrong[0])).startswith("Misclassified")


def test_verify_works_on_a_point_without_a_label(cancer, unlabeled_explorer):
    data, model, inf = cancer
    ex = unlabeled_explorer
    ex.selected = 3
    result = ex.run_verify(n_remove=3, wait=True)
    y_hat = _predicted(model, data.X_test[3:4])
    same = iw.validate_loo(inf, data.X_test[3:4], y_hat, n_remove=3, progress=False)
    assert ex.verify["state"] == "done"
    assert result.removed.tolist() == same.removed.tolist()


def test_the_attack_tab_says_it_needs_a_label(unlabeled_explorer):
    ex = unlabeled_explorer
    ex.selected = 1
    assert "given no test labels" in ex.attack_blocked
    assert ex.run_attack() is None
    assert "given no test labels" in ex.attack["message"]
