"""core.training.ceiling: the second-stage readings that train no network are the convex optimum they claim
to be, and the held-out head never sees a training row."""

from __future__ import annotations

import numpy as np
import pytest

from core.training import ceiling


def separable(n: int = 240, seed: int = 0) -> tuple[dict, dict]:
    """Three classes of 8-dimensional features, each class far along its own direction: linearly separable."""
    rng = np.random.default_rng(seed)
    features, labels = {}, {}
    for split, count in (("train", n), ("val", n // 2), ("test", n // 2)):
        y = rng.integers(0, 3, count)
        x = rng.normal(0, 0.3, (count, 8))
        x[np.arange(count), y] += 4.0
        features[split], labels[split] = x.astype(np.float32), y
    return features, labels


def test_the_logistic_readings_separate_separable_features_perfectly():
    features, labels = separable()
    found = ceiling.readings(features, labels, 3, bn_features=features)
    for name in ("logistic", "heldout", "logistic_bn"):
        assert found[name]["test_accuracy"] == 1.0 and found[name]["train_accuracy"] == 1.0, name
        assert found[name]["converged"] and found[name]["l2"] in ceiling.PENALTIES


def test_the_fit_is_the_penalised_optimum_a_direct_newton_solve_finds():
    """Two classes: the L-BFGS weights equal those of Newton's method on the same penalised objective
    (softmax with two classes is a logistic regression on the difference of the two columns)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4))
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(0, 1.0, 300) > 0).astype(np.int64)
    l2 = 0.05
    w, converged = ceiling.logistic_fit(x, y, 2, l2)
    assert converged
    beta = w[:, 1] - w[:, 0]  # the model's log-odds of class 1: x @ beta[:-1] + beta[-1]
    design = np.hstack([x, np.ones((300, 1))])
    # The softmax penalty on (w0, w1) with w0 = -w1 at the optimum equals l2/4 * |beta|^2 on the difference.
    penalty = np.diag([l2 / 2] * 4 + [0.0])
    b = np.zeros(5)
    for _ in range(50):
        p = 1 / (1 + np.exp(-design @ b))
        gradient = design.T @ (p - y) / 300 + penalty @ b
        hessian = design.T @ (design * (p * (1 - p))[:, None]) / 300 + penalty
        b -= np.linalg.solve(hessian, gradient)
    np.testing.assert_allclose(beta, b, atol=1e-4)


def test_the_held_out_head_never_fits_on_a_training_row(monkeypatch):
    """DFR's reading: every array the held-out head is fitted on comes from the validation split (its
    penalty is chosen on one half of it, then refitted on all of it)."""
    features, labels = separable()
    seen = []
    fit = ceiling.logistic_fit

    def spy(x, y, num_classes, l2, start=None):
        seen.append(np.asarray(x))
        return fit(x, y, num_classes, l2, start)

    monkeypatch.setattr(ceiling, "logistic_fit", spy)
    standardise = ceiling.Standardiser(np.asarray(features["val"], np.float64))
    val_rows = {tuple(np.round(row, 6)) for row in standardise(features["val"])}
    ceiling.fit_reading(features["val"][:60], labels["val"][:60], features["val"][60:], labels["val"][60:],
                        features, labels, 3, refit=(features["val"], labels["val"]))
    assert len(seen) == len(ceiling.PENALTIES) + 1
    for x in seen:
        assert {tuple(np.round(row, 6)) for row in x} <= val_rows


def test_a_reading_chooses_its_penalty_on_the_validation_split_not_the_test_split(monkeypatch):
    features, labels = separable(seed=3)
    scored = []
    score = ceiling.score

    def spy(w, x, y):
        scored.append(len(x))
        return score(w, x, y)

    monkeypatch.setattr(ceiling, "score", spy)
    ceiling.fit_reading(features["train"], labels["train"], features["val"], labels["val"], features, labels, 3)
    choosing = scored[:len(ceiling.PENALTIES)]
    assert choosing == [len(labels["val"])] * len(ceiling.PENALTIES)


@pytest.mark.parametrize("constant", [0.0, 5.0])
def test_a_dead_feature_does_not_break_the_fit(constant):
    features, labels = separable()
    for split in features:
        features[split][:, 3] = constant  # a ReLU unit that never fires
    assert ceiling.readings(features, labels, 3)["logistic"]["test_accuracy"] == 1.0


def test_a_validation_split_too_small_to_halve_leaves_the_held_out_reading_out():
    """One validation image per class: the held-out head would be fitted on nothing (a tiny sweep job once
    printed NaN warnings for it); it is left out and the other readings still stand."""
    rng = np.random.default_rng(0)
    features = {split: rng.normal(size=(n, 4)) for split, n in (("train", 20), ("val", 2), ("test", 6))}
    labels = {"train": np.arange(20) % 2, "val": np.array([0, 1]), "test": np.arange(6) % 2}
    out = ceiling.readings(features, labels, 2)
    assert "heldout" not in out and 0.0 <= out["logistic"]["test_accuracy"] <= 1.0
