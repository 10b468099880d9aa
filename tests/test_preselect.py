"""Classify's preselection: one pass per shipped model gives the verdicts, the chooser's say, the model picked
and that model's answer, the same answer the page would compute for it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from core.classify import ood
from core.classify.classify import classify, load_models
from core.classify.preselect import preselect
from tests.conftest import synthetic_images
from tests.test_classify import color_dataset, png_bytes, save_model_set


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """Two model sets with statistics of very different images: dark 28x28 items, bright colour quadrants."""
    folder = tmp_path_factory.mktemp("shipped")
    rng = np.random.default_rng(0)
    dark = np.zeros((120, 28, 28, 1), np.uint8)
    for img in dark:
        r, c = rng.integers(4, 14, 2)
        img[r:r + 10, c:c + 10] = rng.integers(150, 255)
    quadrants, labels = synthetic_images(30, 4, size=32, seed=3)
    gray_paths = save_model_set(folder / "gray", "fashion-mnist", (28, 28, 1), 10)
    color_paths = save_model_set(folder / "color", "cifar10", (32, 32, 3), 10)
    gray_stats = ood.fit_model(load_models(gray_paths).stage1, color_dataset(dark, np.arange(120) % 10, "dark"))[0]
    color_stats = ood.fit_model(load_models(color_paths).stage1, color_dataset(quadrants, labels, "quad"))[0]
    models = [load_models(gray_paths, ood_path=gray_stats.save(folder / "gray.npz")),
              load_models(color_paths, ood_path=color_stats.save(folder / "color.npz"))]
    photos = {"item": png_bytes(dark[5][..., 0]), "quadrant": png_bytes(synthetic_images(1, 4, size=32, seed=9)[0][2])}
    return models, photos


@dataclass
class Chooser:
    """A model chooser that says what the test tells it to."""

    probabilities: list[float]
    accuracy: np.ndarray = field(default_factory=lambda: np.array([0.9, 0.8]))

    def route(self, predictions):
        assert all(p is not None and p.features for p in predictions)  # it reads the passes' features
        return np.array(self.probabilities)


def test_without_a_chooser_the_photo_goes_to_the_model_it_is_most_typical_of(shipped):
    models, photos = shipped
    user_model = None  # the user's own model set: not measured
    selection = preselect([user_model, *models], photos["quadrant"])
    assert selection.pick == 2 and selection.route is None and selection.predictions[0] is None
    assert set(selection.verdicts) == {1, 2} and selection.typical_first()[0] == 2
    assert preselect(models, photos["item"]).pick == 0


def test_the_chooser_decides_when_it_can_read_every_model_it_was_fitted_for(shipped):
    models, photos = shipped
    candidates = [None, *models]
    selection = preselect(candidates, photos["quadrant"], (Chooser([0.7, 0.3]), [1, 2]))
    assert selection.pick == 1  # against the rank rule: the chooser has the say
    assert selection.route == {1: (pytest.approx(0.7), 0.9), 2: (pytest.approx(0.3), 0.8)}
    unreadable = preselect(candidates, photos["quadrant"], (Chooser([0.7, 0.3]), [0, 2]))
    assert unreadable.route is None and unreadable.pick == 2  # it reads a model not measured: the rank rule


def test_the_preselected_models_answer_is_the_one_classify_gives(shipped):
    models, photos = shipped
    selection = preselect(models, photos["item"])
    measured = selection.predictions[selection.pick]
    again = classify(models[selection.pick], photos["item"])
    assert measured.inverted == again.inverted
    for method, probs in again.probabilities.items():
        np.testing.assert_allclose(measured.probabilities[method], probs, rtol=1e-6)
    assert selection.seconds > 0


def test_an_unsure_chooser_offers_the_other_models_answer(shipped):
    """A dog's face close-up went to the Face Mask model at 68 % with nothing beside its answer: below
    UNSURE the preselection names the other model, whose answer is already measured."""
    from core.classify.preselect import UNSURE

    models, photos = shipped
    sure = preselect(models, photos["quadrant"], (Chooser([0.05, 0.95]), [0, 1]))
    assert not sure.unsure() and sure.pick == 1 and sure.alternative(1) is None
    assert sure.alternative(0) == 1, "a visitor who picks another model is shown the chooser's choice"
    unsure = preselect(models, photos["quadrant"], (Chooser([0.32, 0.68]), [0, 1]))
    assert 0.68 < UNSURE and unsure.unsure() and unsure.pick == 1
    assert unsure.alternative(1) == 0 and unsure.predictions[0] is not None
    assert preselect(models, photos["quadrant"]).alternative(1) is None  # no chooser, nothing to doubt
