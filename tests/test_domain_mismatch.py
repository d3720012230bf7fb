"""The domain mismatch of the paper's Sec 5.3 on ``iw.datasets.breast_cancer_clinic_b`` (notebook
05): the data set's construction, and the facts the notebook's story rests on, so that a change
that breaks the story fails here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import influence_widgets as iw

L2 = 0.01
FLAG = -1  # the "clinic B" column
BENIGN = 1


def _fit(data: iw.datasets.Dataset) -> torch.nn.Linear:
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=L2, progress=False)
    return model


def _predictions(model: torch.nn.Module, X: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(X.double()).argmax(1)


@pytest.fixture(scope="module")
def story():
    """The data with the mismatch (4 benign clinic-B patients kept), its model and Influence, and
    the clinic-B test points that model gets wrong."""
    torch.set_num_threads(1)
    data = iw.datasets.breast_cancer_clinic_b(keep=4)
    model = _fit(data)
    inf = iw.Influence(model, data, l2=L2, progress=False)
    wrong = (_predictions(model, data.X_test) != data.y_test) & (data.X_test[:, FLAG] == 1)
    return data, model, inf, wrong


def _kept(data: iw.datasets.Dataset) -> torch.Tensor:
    """Training indices of the benign clinic-B patients left."""
    return torch.nonzero((data.X_train[:, FLAG] == 1) & (data.y_train == BENIGN)).squeeze(1)


# ----- the data set ------------------------------------------------------------------------------
def test_clinic_b_rows_are_imputed_and_flagged():
    data = iw.datasets.breast_cancer_clinic_b(keep=None)
    base = iw.datasets.breast_cancer()
    assert data.feature_names == [*base.feature_names, "clinic B"]
    for X, X_base, units in [
        (data.X_train, base.X_train, data.units[0]),
        (data.X_test, base.X_test, data.units[1]),
    ]:
        flag = X[:, FLAG] == 1
        assert set(X[:, FLAG].tolist()) == {0.0, 1.0}
        assert 0.1 < float(flag.double().mean()) < 0.3
        assert torch.equal(X[flag, :FLAG], torch.zeros_like(X[flag, :FLAG]))  # the mean, imputed
        assert torch.equal(X[~flag, :FLAG], X_base[~flag])
        imputed = units[flag.numpy(), :FLAG]
        np.testing.assert_allclose(imputed, np.broadcast_to(base.units[0].mean(0), imputed.shape))
        np.testing.assert_array_equal(units[:, FLAG], X[:, FLAG].numpy())
    assert torch.equal(data.y_train, base.y_train)


def test_keep_drops_all_but_keep_benign_clinic_b_training_patients():
    full = iw.datasets.breast_cancer_clinic_b(keep=None)
    data = iw.datasets.breast_cancer_clinic_b(keep=4)
    flagged_benign = int(((full.X_train[:, FLAG] == 1) & (full.y_train == BENIGN)).sum())
    assert len(_kept(data)) == 4
    assert len(full.y_train) - len(data.y_train) == flagged_benign - 4

    # Nothing else changes: the other training rows, and the whole test split.
    def others(d: iw.datasets.Dataset) -> torch.Tensor:
        return d.X_train[(d.X_train[:, FLAG] == 0) | (d.y_train != BENIGN)]

    assert torch.equal(others(full), others(data))
    assert torch.equal(full.X_test, data.X_test) and torch.equal(full.y_test, data.y_test)
    assert data.units[0].shape == (len(data.y_train), 31)
    none_kept = iw.datasets.breast_cancer_clinic_b(keep=0)
    assert len(_kept(none_kept)) == 0 and torch.equal(others(none_kept), others(full))


# ----- the story ---------------------------------------------------------------------------------
def test_benign_clinic_b_test_points_are_wrong_after_the_mismatch_and_not_before(story):
    data, model, _, wrong = story
    benign_b = (data.X_test[:, FLAG] == 1) & (data.y_test == BENIGN)
    before = _predictions(_fit(iw.datasets.breast_cancer_clinic_b(keep=None)), data.X_test)
    assert int(benign_b.sum()) >= 15
    assert bool((before[benign_b] == BENIGN).all())  # all right before
    assert torch.equal(wrong, benign_b)  # after: exactly these, all of them, are wrong


def test_the_kept_patients_are_the_most_helpful_to_the_wrong_points_by_far(story, untouched):
    data, model, inf, wrong = story
    with untouched(model, data.X_train, data.y_train, data.X_test, data.y_test):
        top = inf.top_of_set(data.X_test[wrong], data.y_test[wrong], k=5)
    kept = _kept(data)
    assert set(top.helpful[0, :4].tolist()) == set(kept.tolist())
    assert float(top.helpful_scores[0, 3]) > 5 * float(top.helpful_scores[0, 4])
    # The most harmful are clinic-B malignant patients (the ones the model learnt the flag from).
    harmful = top.harmful[0]
    assert bool(
        (data.X_train[harmful, FLAG] == 1).all() and (data.y_train[harmful] != BENIGN).all()
    )


def test_the_flag_carries_the_effect_in_perturbation_influence(story):
    data, _, inf, wrong = story
    pert = inf.perturbation_influence(data.X_test[wrong], data.y_test[wrong], _kept(data))
    assert pert.shape == (int(wrong.sum()), 4, 31)
    assert bool((pert.abs().argmax(2) == data.n_features - 1).all())
    summed = pert.sum(0).abs()  # on the set's summed loss
    assert bool((summed[:, FLAG] > 2 * summed[:, :FLAG].max(1).values).all())


def test_the_weight_names_the_flag_but_not_the_training_points(story):
    data, model, inf, _ = story
    w = (model.weight[1] - model.weight[0]).detach()
    assert int(w.abs().argmax()) == data.n_features - 1 and float(w[FLAG]) < 0  # to malignant
    # Every clinic-B training row has the same input, so the weight gives them all the same share.
    flagged = data.X_train[:, FLAG] == 1
    assert int(flagged.sum()) > 20
    assert torch.equal(
        data.X_train[flagged], data.X_train[flagged][:1].expand(int(flagged.sum()), -1)
    )


def test_an_unlabeled_wrong_point_is_explained_for_malignant(story):
    data, _, inf, wrong = story
    t = int(torch.nonzero(wrong)[0])
    x = data.X_test[t : t + 1]
    assert inf.predicted_labels(x).tolist() == [1 - BENIGN]
    top = inf.top(x, k=4)  # y_test=None: for the predicted class, malignant
    assert set(top.harmful[0].tolist()) == set(_kept(data).tolist())
