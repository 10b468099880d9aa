"""core.classify.ood: the Mahalanobis out-of-distribution check on hand-made features with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from core.classify import ood


def gaussian_classes(n: int, d: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes, unit-variance Gaussian features around distinct means (all moved by ``shift``)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    means = np.array([[4.0 * c if j == c else 0.0 for j in range(d)] for c in range(3)])
    return rng.normal(size=(n, d)) + means[y] + shift, y


def test_ledoit_wolf_shrinkage_on_known_cases():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 5)) * np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    covariance, a = ood.shrunk_covariance(x - x.mean(axis=0))
    assert a < 0.01  # many images, few dimensions: the sample covariance is trusted
    np.testing.assert_allclose(np.diag(covariance), [1, 4, 9, 16, 25], rtol=0.05)
    few = rng.normal(size=(10, 40))  # fewer images than dimensions: singular sample covariance
    covariance, a = ood.shrunk_covariance(few - few.mean(axis=0))
    assert 0.3 < a <= 1.0 and np.linalg.eigvalsh(covariance).min() > 0


def test_test_images_pass_and_shifted_ones_are_flagged(tmp_path):
    train, y = gaussian_classes(3000, 8, seed=0)
    test, _ = gaussian_classes(1000, 8, seed=1)
    far, _ = gaussian_classes(300, 8, seed=2, shift=6.0)
    probs = np.full((len(test), 3), 1 / 3)
    stats = ood.fit(["features"], [train], y, 3, [test], probs)
    assert stats.summary()["test_flagged"] == pytest.approx(0.01, abs=0.002)  # the 99th percentile, by design
    fresh, _ = gaussian_classes(1000, 8, seed=3)
    assert np.mean(stats.scores([fresh]) > stats.threshold) < 0.03  # new in-distribution images pass
    assert np.mean(stats.scores([far]) > stats.threshold) > 0.99

    loaded = ood.OodStats.load(stats.save(tmp_path / "ood.npz"))
    np.testing.assert_allclose(loaded.scores([far]), stats.scores([far]), rtol=1e-5)
    verdict = loaded.check([far[0]], np.array([0.2, 0.7, 0.1]))
    assert verdict.flagged and verdict.ratio > 1 and verdict.score_rank == 1.0 and verdict.msp == 0.7
    assert verdict.layer == "features"


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_damaged_statistics_file_is_one_clear_error(tmp_path, damage):
    train, y = gaussian_classes(300, 4, seed=0)
    path = ood.fit(["features"], [train], y, 3, [train], np.full((len(train), 3), 1 / 3)).save(tmp_path / "ood.npz")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        np.savez(path, something=np.zeros(3))
    with pytest.raises(ood.OodError, match=r"^its statistics file ood.npz cannot be read .*core bundle") as info:
        ood.OodStats.load(path)
    assert "\n" not in str(info.value)


def test_an_input_unusual_at_any_depth_is_flagged():
    """Two depths: the input is typical at the last one and far off at the first (what a photo does to a
    Fashion-MNIST network); the ensemble flags it, the last depth alone would not."""
    train, y = gaussian_classes(2000, 6, seed=0)
    test, _ = gaussian_classes(500, 6, seed=1)
    early_train, _ = gaussian_classes(2000, 4, seed=4)
    early_test, _ = gaussian_classes(500, 4, seed=5)
    stats = ood.fit(["conv", "features"], [early_train, train], y, 3, [early_test, test], np.ones((500, 3)) / 3)
    typical_late = test[:1]
    odd_early = early_test[:1] + 10.0
    verdict = stats.check([odd_early[0], typical_late[0]], np.array([1.0, 0, 0]))
    assert verdict.flagged and verdict.layer == "conv"
    assert stats.gaussians[1].distances(typical_late)[0] < stats.gaussians[1].scale


def test_a_dead_feature_that_lights_up_is_flagged():
    """ReLU features that are zero on every training image make the sample covariance singular; shrinkage
    keeps the check defined, and an input that activates the dead feature is far away."""
    train, y = gaussian_classes(600, 5, seed=0)
    train = np.hstack([train, np.zeros((600, 3))])
    test, _ = gaussian_classes(200, 5, seed=1)
    test = np.hstack([test, np.zeros((200, 3))])
    stats = ood.fit(["features"], [train], y, 3, [test], np.ones((200, 3)) / 3)
    dead, live = test[:1].copy(), test[:1].copy()
    dead[0, -1] += 1.0  # one unit on a feature no training image ever used
    live[0, 4] += 1.0  # the same step on a feature with unit spread
    assert np.isfinite(stats.scores([test])).all()
    assert stats.scores([dead])[0] > stats.threshold
    assert stats.scores([dead])[0] > 1.5 * stats.scores([live])[0]


def test_a_class_without_training_images_is_a_clear_error():
    train, y = gaussian_classes(30, 4, seed=0)
    with pytest.raises(ValueError, match="no training image of class"):
        ood.fit(["features"], [train], y, 4, [train], np.ones((30, 4)) / 4)


def test_every_shipped_dataset_says_what_its_model_knows():
    for dataset in ("fashion-mnist", "cifar10", "dogs-cats", "face-mask"):
        assert len(ood.what_it_knows(dataset, [])) > 20
    assert ood.what_it_knows("folder", ["apples", "pears"]) == "2 classes: apples, pears"


def test_saving_over_a_bundles_statistics_is_all_or_nothing(tmp_path, monkeypatch):
    """A bundle being rebuilt is read meanwhile: a save that fails leaves the previous statistics readable."""
    train, y = gaussian_classes(60, 4, seed=3)
    stats = ood.fit(["features"], [train], y, 3, [train], np.full((len(train), 3), 1 / 3))
    path = stats.save(tmp_path / "ood.npz")

    def torn(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("no space left on device")

    monkeypatch.setattr(np, "savez_compressed", torn)
    with pytest.raises(OSError):
        stats.save(path)
    assert ood.OodStats.load(path).threshold == stats.threshold
