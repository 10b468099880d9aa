"""Report 003's GAN augmentation: the DCGAN learns, and its images join the training split only."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from core.protocol.config import Protocol
from core.models.gan import DCGAN, gan_side, with_synthetic
from core.results.store import PROJECT_ROOT


def _tiny_batch(side: int = 8):
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    real = np.clip(rng.normal(0.5, 0.1, (8, side, side, 3)), -1, 1).astype("float32")
    gan = DCGAN(latent=4, side=side, filters=4)
    return gan, real, gan.sample(8, rng)


def test_a_discriminator_step_reduces_the_discriminator_loss():
    gan, real, fake = _tiny_batch()
    before = gan.discriminator_loss(real, fake)
    gan.discriminator_step(real, fake)
    after_one = gan.discriminator_loss(real, fake)
    for _ in range(9):
        gan.discriminator_step(real, fake)
    assert after_one < before
    assert gan.discriminator_loss(real, fake) < after_one


def test_each_step_trains_only_its_own_network():
    gan, real, fake = _tiny_batch()
    g_before = [w.copy() for w in gan.generator.get_weights()]
    gan.discriminator_step(real, fake)
    assert all(np.array_equal(a, b) for a, b in zip(g_before, gan.generator.get_weights()))
    d_before = [w.copy() for w in gan.discriminator.get_weights()]  # includes BatchNorm moving statistics
    gan.generator_step(np.random.default_rng(1).standard_normal((8, 4)).astype("float32"))
    assert all(np.array_equal(a, b) for a, b in zip(d_before, gan.discriminator.get_weights()))
    assert any(not np.array_equal(a, b) for a, b in zip(g_before, gan.generator.get_weights()))


def test_gan_side_rounds_up_to_a_power_of_two_times_four():
    assert [gan_side(s) for s in (8, 20, 32, 64, 100)] == [8, 32, 32, 64, 128]


def test_synthetic_images_join_the_training_split_only(tmp_path):
    from core.data.datasets import Dataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8)
    data = Dataset("folder", ["cows", "horses"], x[:12], np.tile([0, 1], 6), x[12:16],
                   np.array([0, 1, 0, 1]), x[16:], np.array([0, 1, 0, 1]),
                   ids={"train": np.arange(12), "val": np.arange(4), "test": np.arange(4)})
    p = Protocol(dataset="folder", data_path="/x", image_size=16, gan_images=3, gan_epochs=1, gan_filters=4,
                 gan_latent=4)
    events: list[dict] = []
    out, info = with_synthetic(data, p, seed=0, workdir=tmp_path, report=events.append)
    assert len(out.y_train) == 12 + 6 and np.bincount(out.y_train[12:]).tolist() == [3, 3]
    assert out.x_train.dtype == np.uint8 and out.x_train.shape[1:] == (8, 8, 3)
    assert out.x_val is data.x_val and out.x_test is data.x_test
    assert info["images"] == 6 and set(info["losses"]) == {"cows", "horses"}
    assert any(e.get("stage") == "gan" and e.get("gan_class") == "horses" for e in events)
    preview = cv2.imdecode(np.frombuffer(base64.b64decode(info["preview_png"]), np.uint8), cv2.IMREAD_COLOR)
    assert preview.shape == (2 * 8, 3 * 8, 3)  # one row per class, its generated images
    again, _ = with_synthetic(data, p, seed=0, workdir=tmp_path, report=events.append)  # resumed: reused
    assert np.array_equal(again.x_train, out.x_train) and events[-1].get("reused")
    assert with_synthetic(data, p.with_(gan_images=0), 0, tmp_path) == (data, None)


JAX_SCRIPT = """
import numpy as np, keras
from core.models.gan import DCGAN
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
real = np.clip(rng.normal(0.5, 0.1, (8, 8, 8, 3)), -1, 1).astype("float32")
gan = DCGAN(latent=4, side=8, filters=4)
fake = gan.sample(8, rng)
before = gan.discriminator_loss(real, fake)
for _ in range(5):
    gan.discriminator_step(real, fake)
d = [w.copy() for w in gan.discriminator.get_weights()]
gan.generator_step(rng.standard_normal((8, 4)).astype("float32"))
assert all(np.array_equal(a, b) for a, b in zip(d, gan.discriminator.get_weights()))
assert gan.discriminator_loss(real, fake) < before
print("ok", keras.backend.backend())
"""


@pytest.mark.slow
def test_the_same_dcgan_code_trains_on_jax():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(PROJECT_ROOT), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", JAX_SCRIPT], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ok jax" in done.stdout
