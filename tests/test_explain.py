"""core.classify.explain: Grad-CAM points at the evidence for the class asked about, the same on TensorFlow and JAX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.classify import explain

ROOT = Path(__file__).resolve().parent.parent


def colour_detector(path: Path | None = None):
    """A network with a known answer: a 1x1 convolution copies the red and green channels into two maps,
    ``features`` sums each map over the image, the softmax layer passes them through. Class 0 is "red",
    class 1 "green"; each depends only on where its colour is."""
    import keras
    from keras import layers

    from core.models.models import FEATURE_LAYER, SOFTMAX_LAYER

    inputs = keras.Input((8, 8, 3), name="pixels")
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    conv = layers.Conv2D(2, 1, activation="relu", name="conv")
    x = conv(x)
    x = layers.Flatten()(x)
    features = layers.Dense(2, name=FEATURE_LAYER)
    x = features(x)
    softmax = layers.Dense(2, activation="softmax", name=SOFTMAX_LAYER)
    model = keras.Model(inputs, softmax(x))
    conv.set_weights([np.array([[1, 0], [0, 1], [0, 0]], np.float32).reshape(1, 1, 3, 2), np.zeros(2, np.float32)])
    kernel = np.zeros((8 * 8 * 2, 2), np.float32)
    kernel[0::2, 0] = kernel[1::2, 1] = 1.0  # Flatten interleaves the two maps
    features.set_weights([kernel, np.zeros(2, np.float32)])
    softmax.set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
    if path is not None:
        model.save(path)
    return model


def red_and_green() -> np.ndarray:
    image = np.zeros((8, 8, 3), np.uint8)
    image[:4, :4, 0] = 255  # red square top left
    image[4:, 4:, 1] = 200  # green square bottom right
    return image


def test_the_heat_map_lights_the_evidence_for_the_class_asked_about():
    cam = explain.build(colour_detector())
    image = red_and_green()
    red, green = explain.heat_map(cam, image, 0), explain.heat_map(cam, image, 1)
    assert red.shape == green.shape == (8, 8) and red.max() == pytest.approx(1.0, abs=1e-3)
    assert red[:3, :3].min() > 0.9 and red[5:, 5:].max() < 0.05
    assert green[5:, 5:].min() > 0.9 and green[:3, :3].max() < 0.05


def test_overlay_enlarges_small_inputs_and_colours_the_map():
    gray = np.zeros((28, 28, 1), np.uint8)
    heat = np.zeros((28, 28), np.float32)
    heat[:14] = 1.0
    out = explain.overlay(gray, heat)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    hot, cold = out[:100].reshape(-1, 3).mean(axis=0), out[124:].reshape(-1, 3).mean(axis=0)
    assert hot[0] > hot[2] and cold[2] > cold[0]  # JET: red where the map is hot, blue where it is cold
    assert explain.enlarge(np.zeros((100, 50, 3), np.uint8)).shape == (224, 112, 3)


@pytest.mark.slow
def test_jax_backend_gives_the_same_heat_map(tmp_path):
    """The per-backend gradient helper under JAX (jax.grad, jax.jit) in a child process with
    KERAS_BACKEND=jax, against TensorFlow's here, on the same saved network."""
    pytest.importorskip("jax")
    path = tmp_path / "detector.keras"
    model = colour_detector(path)
    image = red_and_green()
    np.save(tmp_path / "image.npy", image)
    script = ("import json, sys, numpy as np, keras; from core.classify import explain; "
              "cam = explain.build(keras.saving.load_model(sys.argv[1])); img = np.load(sys.argv[2]); "
              "print(json.dumps({'backend': keras.backend.backend(), "
              "'maps': [explain.heat_map(cam, img, c).tolist() for c in (0, 1)]}))")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "image.npy")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    cam = explain.build(model)
    for c in (0, 1):
        np.testing.assert_allclose(result["maps"][c], explain.heat_map(cam, image, c), atol=1e-4)
