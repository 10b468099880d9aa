"""Report 003's GAN augmentation: a DCGAN per class, trained on that class's training images, whose samples are
added to the training set before stage one.

The DCGAN follows the PyTorch tutorial report 003 cites (Radford et al.'s architecture): the generator maps a
latent vector through a 4x4 projection and stride-2 transposed convolutions with BatchNorm and ReLU to a tanh
image; the discriminator mirrors it with stride-2 convolutions and LeakyReLU 0.2 (no BatchNorm, see below),
ending in a sigmoid; weights drawn from N(0, 0.02); Adam(2e-4, beta_1=0.5) for both; binary cross-entropy with
the non-saturating generator loss. Sizes: the image side rounded up to 4 * 2^k (64 for report 003's 64x64;
generated images are resized back when they differ), ``gan_latent`` (report 003: 10) and ``gan_filters`` (the
tutorial's 64 costs 16 times our default 16 per step: this runs on a CPU).

Training uses only public, backend-agnostic Keras calls (``train_on_batch``/``predict_on_batch``): the
discriminator is one compiled model, the generator is trained through a second compiled model ``D(G(z))`` in
which the discriminator is frozen. The same code runs on TensorFlow and JAX (both tested). Consequences of that
design: the discriminator takes one step on the real batch and one on the fake batch (the tutorial sums both
gradients into one step); and the discriminator has no BatchNorm, because a frozen Keras BatchNorm runs in
inference mode, so in the generator's step the discriminator would judge with moving statistics it does not use
when it trains, and the generator learns to fool those instead (measured on 41 cat photos: discriminator loss
near 0, uniformly grey samples). The generator keeps its BatchNorm and draws every image in training mode.

Only the training split is used; validation and test images never reach a GAN. The generated images (and a
preview grid of them) are kept in the repeat's workdir while it runs, so a resumed repeat does not retrain them.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
from keras import layers

from ..protocol.config import Protocol
from ..protocol.files import atomic_write, write_text
from ..data.datasets import Dataset

Progress = Callable[[dict[str, Any]], None]
LEARNING_RATE = 2e-4
BETA_1 = 0.5
MAX_BATCH = 32
PREVIEW_PER_CLASS = 8


def gan_side(image_side: int) -> int:
    """The generator's output side: the smallest 4 * 2^k (k >= 1) at least ``image_side``."""
    side = 8
    while side < image_side:
        side *= 2
    return side


def _init() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(0.0, 0.02)


def generator(latent: int, side: int, filters: int, channels: int = 3) -> keras.Model:
    """Latent vector -> ``side x side x channels`` image in [-1, 1]."""
    ups = int(np.log2(side // 4))
    width = filters * 2 ** (ups - 1)
    z = keras.Input((latent,), name="z")
    x = layers.Dense(4 * 4 * width, use_bias=False, kernel_initializer=_init())(z)
    x = layers.Reshape((4, 4, width))(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for _ in range(ups - 1):
        width //= 2
        x = layers.Conv2DTranspose(width, 4, strides=2, padding="same", use_bias=False, kernel_initializer=_init())(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
    image = layers.Conv2DTranspose(channels, 4, strides=2, padding="same", activation="tanh",
                                   kernel_initializer=_init())(x)
    return keras.Model(z, image, name="generator")


def discriminator(side: int, filters: int, channels: int = 3) -> keras.Model:
    """``side x side x channels`` image in [-1, 1] -> probability that it is real."""
    image = keras.Input((side, side, channels), name="image")
    x = layers.Conv2D(filters, 4, strides=2, padding="same", kernel_initializer=_init())(image)
    x = layers.LeakyReLU(0.2)(x)
    width, size = filters, side // 2
    while size > 4:
        width *= 2
        size //= 2
        x = layers.Conv2D(width, 4, strides=2, padding="same", kernel_initializer=_init())(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)
    return keras.Model(image, layers.Dense(1, activation="sigmoid", kernel_initializer=_init())(x),
                       name="discriminator")


class DCGAN:
    """A generator and a discriminator trained against each other (see the module docstring)."""

    def __init__(self, latent: int, side: int, filters: int, channels: int = 3):
        self.latent, self.side = latent, side
        self.generator = generator(latent, side, filters, channels)
        self.discriminator = discriminator(side, filters, channels)
        self.discriminator.compile(keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1), loss="binary_crossentropy")
        self.discriminator.trainable = False
        z = keras.Input((latent,))
        self.combined = keras.Model(z, self.discriminator(self.generator(z)), name="dcgan")
        self.combined.compile(keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1), loss="binary_crossentropy")

    def discriminator_step(self, real: np.ndarray, fake: np.ndarray) -> float:
        """One update on real images (label 1) and one on generated ones (label 0); the mean loss before them."""
        self.discriminator.trainable = True
        try:
            loss_real = self.discriminator.train_on_batch(real, np.ones((len(real), 1), np.float32))
            loss_fake = self.discriminator.train_on_batch(fake, np.zeros((len(fake), 1), np.float32))
        finally:
            self.discriminator.trainable = False
        return float((_scalar(loss_real) + _scalar(loss_fake)) / 2)

    def generator_step(self, z: np.ndarray) -> float:
        """One generator update towards "the discriminator calls these real"; its loss before the update."""
        return _scalar(self.combined.train_on_batch(z, np.ones((len(z), 1), np.float32)))

    def discriminator_loss(self, real: np.ndarray, fake: np.ndarray) -> float:
        """The discriminator's mean binary cross-entropy on both batches, with batch statistics as in training
        and no update."""
        bce = keras.losses.BinaryCrossentropy()
        p_real = self.discriminator(real, training=True)
        p_fake = self.discriminator(fake, training=True)
        return float((keras.ops.convert_to_numpy(bce(np.ones((len(real), 1)), p_real))
                      + keras.ops.convert_to_numpy(bce(np.zeros((len(fake), 1)), p_fake))) / 2)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` generated images in [-1, 1], drawn in batches with the generator in training mode (BatchNorm on
        batch statistics), as the generator trains and as the tutorial draws them: its moving statistics lag, and
        images drawn with them are not the ones the discriminator was trained against."""
        z = rng.standard_normal((n, self.latent)).astype(np.float32)
        if not n:
            return np.zeros((0, self.side, self.side, 3), np.float32)
        return np.concatenate([keras.ops.convert_to_numpy(self.generator(z[i:i + MAX_BATCH], training=True))
                               for i in range(0, n, MAX_BATCH)])


def _scalar(value: Any) -> float:
    return float(np.asarray(value).reshape(-1)[0])


def to_unit(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 images -> float32 in [-1, 1] at ``side x side``."""
    return (_resize(images, side).astype(np.float32) / 127.5) - 1.0


def to_uint8(images: np.ndarray, side: int) -> np.ndarray:
    """Generated [-1, 1] images -> uint8 at ``side x side``."""
    pixels = np.clip(np.rint((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return _resize(pixels, side)


def _resize(images: np.ndarray, side: int) -> np.ndarray:
    if images.shape[1] == side:
        return images
    import cv2

    out = [cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA) for img in images]
    return np.stack([o[..., None] if o.ndim == 2 else o for o in out])


def train_class(images: np.ndarray, protocol: Protocol, seed: int, report: Progress = lambda e: None,
                label: str = "") -> tuple[DCGAN, dict[str, list[float]]]:
    """Train one class's DCGAN on its uint8 training images; returns it and its per-epoch mean losses."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    side = gan_side(images.shape[1])
    gan = DCGAN(protocol.gan_latent, side, protocol.gan_filters, images.shape[-1])
    real_all = to_unit(images, side)
    batch = min(MAX_BATCH, len(real_all))
    history: dict[str, list[float]] = {"d_loss": [], "g_loss": []}
    for epoch in range(protocol.gan_epochs):
        started = time.perf_counter()
        order = rng.permutation(len(real_all))
        d_losses, g_losses = [], []
        for start in range(0, len(order) - batch + 1, batch):
            real = real_all[order[start:start + batch]]
            fake = gan.sample(batch, rng)
            d_losses.append(gan.discriminator_step(real, fake))
            g_losses.append(gan.generator_step(rng.standard_normal((batch, gan.latent)).astype(np.float32)))
        history["d_loss"].append(float(np.mean(d_losses)))
        history["g_loss"].append(float(np.mean(g_losses)))
        report({"stage": "gan", "gan_class": label, "gan_epoch": epoch + 1, "gan_epochs": protocol.gan_epochs,
                "d_loss": history["d_loss"][-1], "g_loss": history["g_loss"][-1],
                "seconds": time.perf_counter() - started})
    return gan, history


@dataclass
class Synthetic:
    """The generated training images of one repeat and what made them."""

    x: np.ndarray
    y: np.ndarray
    info: dict[str, Any]


def synthesize(data: Dataset, protocol: Protocol, seed: int, report: Progress = lambda e: None) -> Synthetic:
    """Train a DCGAN per class on ``data``'s training split and draw ``protocol.gan_images`` images of each."""
    started = time.perf_counter()
    side = data.input_shape[0]
    xs, ys, losses, preview = [], [], {}, []
    for label, name in enumerate(data.class_names):
        gan, history = train_class(data.x_train[data.y_train == label], protocol, seed * 1000 + label, report, name)
        images = to_uint8(gan.sample(protocol.gan_images, np.random.default_rng(seed * 1000 + 500 + label)), side)
        xs.append(images)
        ys.append(np.full(len(images), label, dtype=data.y_train.dtype))
        losses[name] = history
        preview.append(images[:PREVIEW_PER_CLASS])
    info = {
        "per_class": protocol.gan_images, "images": int(sum(len(x) for x in xs)),
        "gan": {"side": gan_side(side), "latent": protocol.gan_latent, "filters": protocol.gan_filters,
                "epochs": protocol.gan_epochs, "batch": MAX_BATCH, "learning_rate": LEARNING_RATE,
                "beta_1": BETA_1},
        "losses": losses, "seconds": time.perf_counter() - started,
        "preview_png": preview_png(preview),
        "note": "DCGAN per class on the training split only; images added to the training set",
    }
    return Synthetic(np.concatenate(xs), np.concatenate(ys), info)


def preview_png(rows: list[np.ndarray]) -> str:
    """A grid (one row per class) of generated images as a base64 PNG, for records and pages."""
    import cv2

    if not rows or not any(len(r) for r in rows):
        return ""
    side, channels = rows[0].shape[1], rows[0].shape[-1]
    width = max(len(r) for r in rows)
    grid = np.full((len(rows) * side, width * side, channels), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            grid[i * side:(i + 1) * side, j * side:(j + 1) * side] = img
    bgr = cv2.cvtColor(grid, cv2.COLOR_RGB2BGR) if channels == 3 else grid
    ok, png = cv2.imencode(".png", bgr)
    return base64.b64encode(png.tobytes()).decode("ascii") if ok else ""


def with_synthetic(data: Dataset, protocol: Protocol, seed: int, workdir: Path,
                   report: Progress = lambda e: None) -> tuple[Dataset, dict[str, Any] | None]:
    """``data`` with the GAN images added to its training split (unchanged when ``gan_images`` is 0), and the
    record's description of them. Generated images are reused from ``workdir`` after a crash."""
    if not protocol.gan_images:
        return data, None
    store = Path(workdir) / "gan_images.npz"
    meta = Path(workdir) / "gan_info.json"
    if store.is_file() and meta.is_file():
        with np.load(store, allow_pickle=False) as saved:
            synthetic = Synthetic(saved["x"], saved["y"], json.loads(meta.read_text()))
        report({"stage": "gan", "reused": True, "images": len(synthetic.y)})
    else:
        synthetic = synthesize(data, protocol, seed, report)
        with atomic_write(store) as f:  # the images first: the info file says they are complete
            np.savez(f, x=synthetic.x, y=synthetic.y)
        write_text(meta, json.dumps(synthetic.info))
    ids = dict(data.ids)
    ids["train"] = np.concatenate([data.ids["train"], np.full(len(synthetic.y), -1, dtype=data.ids["train"].dtype)])
    augmented = replace(data, x_train=np.concatenate([data.x_train, synthetic.x]),
                        y_train=np.concatenate([data.y_train, synthetic.y]), ids=ids,
                        info={**data.info, "synthetic_train_images": len(synthetic.y)})
    return augmented, synthetic.info
