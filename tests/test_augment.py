"""Augmentation presets and ZCA whitening (report 004's aug1)."""

from __future__ import annotations

import numpy as np
import pytest

from core.data.augment import PRESETS, ZCAWhitening, preset_for, random_layers, zca_matrix
from core.protocol.config import AUGMENT_PRESETS, Protocol


def test_zca_of_a_known_matrix_matches_the_closed_form():
    """Centred data with covariance diag(0.5, 2) along the axes: W = diag(1/sqrt(0.5+e), 1/sqrt(2+e))."""
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]]).reshape(4, 1, 2, 1)
    eps = 1e-6
    mean, w = zca_matrix(x, eps)
    assert np.allclose(mean, [0.0])
    assert np.allclose(w, np.diag([1 / np.sqrt(0.5 + eps), 1 / np.sqrt(2.0 + eps)]))


@pytest.mark.parametrize("n", [6, 50])  # fewer images than values (thin SVD path) and more (eigh path)
def test_zca_whitens_to_identity_covariance_and_matches_imagedatagenerators_formula(n):
    rng = np.random.default_rng(1)
    mix = rng.normal(size=(12, 12))
    x = (rng.normal(size=(n, 12)) @ mix + 3.0).reshape(n, 2, 2, 3)
    eps = 1e-3
    mean, w = zca_matrix(x, eps)
    flat = (x - x.reshape(-1, 3).mean(axis=0)).reshape(n, -1)   # ImageDataGenerator: per-channel mean
    sigma = flat.T @ flat / n
    u, s, _ = np.linalg.svd(sigma)
    assert np.allclose(w, (u * (1 / np.sqrt(s + eps))) @ u.T, atol=1e-6)
    if n > 12:
        white = flat @ w
        assert np.allclose(white.T @ white / n, np.eye(12), atol=0.05)


def test_zca_layer_applies_the_fitted_whitening():
    rng = np.random.default_rng(2)
    x = rng.random((40, 4, 4, 3)).astype("float32")
    layer = ZCAWhitening(1e-2)
    layer.fit(x)
    mean, w = zca_matrix(x, 1e-2)
    expected = ((x - mean).reshape(40, -1) @ w).reshape(x.shape)
    assert np.allclose(np.asarray(layer(x)), expected, atol=1e-4)


def test_zca_refuses_images_too_large_for_its_matrix():
    with pytest.raises(ValueError, match="smaller image size"):
        ZCAWhitening().build((None, 64, 64, 3))


def test_presets_are_the_reports_recipes():
    assert tuple(PRESETS) == AUGMENT_PRESETS
    aug1, aug2 = PRESETS["aug1"], PRESETS["aug2"]
    assert (aug1.shift, aug1.zoom, aug1.rotation_deg, aug1.zca_epsilon) == (0.2, 0.2, 20.0, 1e-6)
    assert (aug2.shift, aug2.zoom, aug2.horizontal_flip, aug2.vertical_flip, aug2.zca_epsilon) == \
        (0.1, 0.1, True, True, None)
    assert preset_for(Protocol(dataset="cifar10")) is None
    assert preset_for(Protocol(dataset="cifar10", augment_preset="none")) is None
    assert preset_for(Protocol(dataset="cifar10", augment_preset="cows-horses")).name == "cows-horses"


def test_random_layers_are_identity_at_inference():
    import keras

    layers = random_layers(PRESETS["cows-horses"], seed=0)
    assert [layer.name for layer in layers] == ["aug_rotation", "aug_zoom", "aug_shift", "aug_flip",
                                                "aug_brightness", "aug_contrast"]
    x = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3)).astype("float32")
    inputs = keras.Input((16, 16, 3))
    y = inputs
    for layer in layers:
        y = layer(y)
    model = keras.Model(inputs, y)
    assert np.allclose(np.asarray(model(x, training=False)), x)
    assert not np.allclose(np.asarray(model(x, training=True)), x)
