"""Augmentation recipes as named presets, built from Keras preprocessing layers, and ZCA whitening.

Every preset is data (:class:`Preset`), labelled with where it comes from:

- ``paper``: the paper's ImageDataGenerator ranges (:class:`core.protocol.config.Augmentation`, adjustable);
- ``none``: no augmentation on any dataset (report 004's "basic version");
- ``aug1``: report 004's approach 1: width/height shift 0.2, zoom 0.2, rotation 20 and ZCA whitening
  (``zca_epsilon=1e-6``);
- ``aug2``: report 004's approach 2: shift 0.1, zoom 0.1, horizontal and vertical flips;
- ``cows-horses``: report 003's "random transformations" with torchvision, which it does not list; we read
  them as the common geometric and colour ones: horizontal flip, rotation 15 degrees, zoom and shift 0.1,
  brightness and contrast 0.2.

The random layers act only while training (identity at inference) and come first, on the uint8-valued
pixels. ZCA whitening is not random: like ImageDataGenerator's ``standardize`` it follows the random transform
(after the model's rescaling to [0, 1]) and is applied at inference too, so test images are whitened exactly
as the training images were. Its statistics are fitted on the training split only (:func:`fit_whitening`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import keras
import numpy as np
from keras import layers

from ..protocol.config import AUGMENT_PRESETS, ZCA_MAX_DIMS, Augmentation, Protocol


@dataclass(frozen=True)
class Preset:
    """One augmentation recipe. Ranges follow ImageDataGenerator: ``rotation_deg`` both ways, ``zoom`` a scale
    in ``[1 - zoom, 1 + zoom]``, ``shift`` a fraction of the side; ``brightness``/``contrast`` are Keras'
    RandomBrightness/RandomContrast factors. ``zca_epsilon`` set means ZCA whitening with that epsilon."""

    name: str
    source: str
    description: str
    rotation_deg: float = 0.0
    zoom: float = 0.0
    shift: float = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    zca_epsilon: float | None = None
    fill_mode: str = "nearest"


def from_augmentation(aug: Augmentation) -> Preset:
    """The paper's preset with the given ranges."""
    return Preset("paper", "paper", "the paper's ImageDataGenerator ranges", rotation_deg=aug.rotation_deg,
                  zoom=aug.zoom, shift=aug.shift, horizontal_flip=aug.horizontal_flip, fill_mode=aug.fill_mode)


PRESETS: dict[str, Preset] = {
    "paper": from_augmentation(Augmentation()),
    "none": Preset("none", "004", "no augmentation (report 004's basic version)"),
    "aug1": Preset("aug1", "004", "report 004's approach 1: shift 0.2, zoom 0.2, rotation 20, ZCA whitening",
                   rotation_deg=20.0, zoom=0.2, shift=0.2, zca_epsilon=1e-6),
    "aug2": Preset("aug2", "004", "report 004's approach 2: shift 0.1, zoom 0.1, horizontal and vertical flips",
                   zoom=0.1, shift=0.1, horizontal_flip=True, vertical_flip=True),
    "cows-horses": Preset("cows-horses", "003", "report 003's random transforms (our reading): flip, rotation "
                          "15, zoom and shift 0.1, brightness and contrast 0.2", rotation_deg=15.0, zoom=0.1,
                          shift=0.1, horizontal_flip=True, brightness=0.2, contrast=0.2),
}
assert tuple(PRESETS) == AUGMENT_PRESETS, "core.protocol.config.AUGMENT_PRESETS must list exactly these presets"


def preset_for(protocol: Protocol) -> Preset | None:
    """The recipe a protocol trains with; None when it does not augment."""
    if not protocol.use_augmentation:
        return None
    if protocol.augment_preset in ("paper", "none"):  # "none" with augment=True is refused by the protocol
        return from_augmentation(protocol.augmentation)
    return PRESETS[protocol.augment_preset]


def random_layers(preset: Preset, seed: int | None = None) -> list[layers.Layer]:
    """The preset's random transforms as Keras preprocessing layers (identity at inference), on 0-255 pixels."""
    out: list[layers.Layer] = []
    fill = preset.fill_mode
    if preset.rotation_deg:
        out.append(layers.RandomRotation(preset.rotation_deg / 360.0, fill_mode=fill, seed=seed,
                                         name="aug_rotation"))
    if preset.zoom:
        out.append(layers.RandomZoom((-preset.zoom, preset.zoom), fill_mode=fill, seed=seed, name="aug_zoom"))
    if preset.shift:
        out.append(layers.RandomTranslation(preset.shift, preset.shift, fill_mode=fill, seed=seed,
                                            name="aug_shift"))
    flips = [mode for mode, on in (("horizontal", preset.horizontal_flip), ("vertical", preset.vertical_flip))
             if on]
    if flips:
        out.append(layers.RandomFlip("_and_".join(flips), seed=seed, name="aug_flip"))
    if preset.brightness:
        out.append(layers.RandomBrightness(preset.brightness, value_range=(0, 255), seed=seed,
                                           name="aug_brightness"))
    if preset.contrast:
        out.append(layers.RandomContrast(preset.contrast, seed=seed, name="aug_contrast"))
    return out


def describe(preset: Preset) -> dict[str, object]:
    """The preset's settings as a plain dict (for pages and records)."""
    return {f.name: getattr(preset, f.name) for f in fields(preset)}


# ---------------------------------------------------------------------------------------- ZCA whitening

@keras.saving.register_keras_serializable(package="two_stage")
class ZCAWhitening(layers.Layer):
    """ImageDataGenerator's ``zca_whitening`` (which also turns on ``featurewise_center``) as a layer.

    Fitted (:meth:`fit`) on images ``x`` of shape ``(n, h, w, c)``: ``mean`` is the per-channel mean over all
    images and pixels; with ``X`` the centred images flattened to ``(n, d)``, ``sigma = X^T X / n`` and its SVD
    ``U S U^T``, the whitening matrix is ``W = U diag(1 / sqrt(S + epsilon)) U^T``. The layer computes
    ``flatten(x - mean) @ W``, reshaped back. Both are non-trainable weights, saved with the model.
    ``W`` is ``d x d``: :data:`core.protocol.config.ZCA_MAX_DIMS` bounds ``d`` (a 32x32x3 image is 3,072).
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        dims = int(np.prod(input_shape[1:]))
        if dims > ZCA_MAX_DIMS:
            raise ValueError(f"ZCA whitening of {dims}-value images needs a {dims}x{dims} matrix; at most "
                             f"{ZCA_MAX_DIMS} values (32x32x3 is 3,072) are supported: use a smaller image size")
        self.mean = self.add_weight(shape=(int(input_shape[-1]),), initializer="zeros", trainable=False,
                                    name="mean")
        self.components = self.add_weight(shape=(dims, dims), initializer="identity", trainable=False,
                                          name="components")

    def call(self, inputs):
        shape = keras.ops.shape(inputs)
        flat = keras.ops.reshape(inputs - self.mean, (shape[0], -1))
        return keras.ops.reshape(keras.ops.matmul(flat, self.components), shape)

    def fit(self, x: np.ndarray, chunk: int = 2048) -> None:
        """Set ``mean`` and ``components`` from ``x`` (float64 sums, in chunks: memory stays ``d x d``)."""
        x = np.asarray(x)
        if not self.built:
            self.build((None, *x.shape[1:]))
        mean, matrix = zca_matrix(x, self.epsilon, chunk)
        self.mean.assign(mean.astype(np.float32))
        self.components.assign(matrix.astype(np.float32))

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def zca_matrix(x: np.ndarray, epsilon: float, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """``(per-channel mean, whitening matrix)`` of images ``x`` as :class:`ZCAWhitening` defines them."""
    n = len(x)
    channels = x.shape[-1]
    mean = np.zeros(channels)
    for start in range(0, n, chunk):
        mean += np.asarray(x[start:start + chunk], dtype=np.float64).reshape(-1, channels).sum(axis=0)
    mean /= n * int(np.prod(x.shape[1:-1]))
    dims = int(np.prod(x.shape[1:]))
    if n < dims:  # few images: sigma has rank <= n, so decompose the n x d data instead of the d x d sigma
        flat = (np.asarray(x, dtype=np.float64) - mean).reshape(n, dims)
        _, singular, vt = np.linalg.svd(flat, full_matrices=False)
        scale = 1.0 / np.sqrt(singular ** 2 / n + epsilon) - 1.0 / np.sqrt(epsilon)
        # sigma's eigenvalues are singular**2 / n on the rows of vt and 0 on their complement
        return mean, np.eye(dims) / np.sqrt(epsilon) + (vt.T * scale) @ vt
    sigma = np.zeros((dims, dims))
    for start in range(0, n, chunk):
        flat = (np.asarray(x[start:start + chunk], dtype=np.float64) - mean).reshape(-1, dims)
        sigma += flat.T @ flat
    sigma /= n
    # sigma is symmetric positive semi-definite: its eigendecomposition is the SVD ImageDataGenerator takes
    values, vectors = np.linalg.eigh(sigma)
    return mean, (vectors * (1.0 / np.sqrt(np.maximum(values, 0.0) + epsilon))) @ vectors.T


def whitening_layers(preset: Preset | None) -> list[layers.Layer]:
    """The preset's deterministic layers after rescaling (ZCA), applied in training and inference."""
    if preset is None or preset.zca_epsilon is None:
        return []
    return [ZCAWhitening(preset.zca_epsilon, name="zca")]


def fit_whitening(model: keras.Model, x_train: np.ndarray, batch_size: int = 256) -> int:
    """Fit every :class:`ZCAWhitening` layer of ``model`` on what reaches it from ``x_train`` in inference mode
    (rescaled pixels, no random transform: ImageDataGenerator's ``fit`` without ``augment``). Returns how many."""
    found = [layer for layer in model.layers if isinstance(layer, ZCAWhitening)]
    for layer in found:
        probe = keras.Model(model.input, layer.input)
        seen = np.concatenate([np.asarray(probe.predict_on_batch(x_train[i:i + batch_size]))
                               for i in range(0, len(x_train), batch_size)])
        layer.fit(seen)
    return len(found)
