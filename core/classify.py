"""Classify one photo with a trained model set: stage one and both stage-two heads, side by side.

The photo goes through :func:`core.imageio.decode_image`, the function the folder loaders use, at the model's
input size (grayscale for one-channel models), so the model sees exactly the kind of pixels it was trained on.
The models rescale uint8 pixels themselves; nothing else is done to the array. For speed the three are fused
into one compiled model with three outputs (stage one's softmax and both heads on the shared features): one CNN
pass per photo, called with ``predict_on_batch`` rather than ``predict``, which sets up a data pipeline per call
(bench/: 3.6 ms instead of 28.6 ms for a 128x128 PNG on the Fashion-MNIST model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .datasets import CIFAR_CLASSES, FASHION_CLASSES
from .imageio import DEFAULT_MAX_PIXELS, ImageError, decode_image

HEADS = ("adam", "sgd")
METHOD_LABELS = {"stage1": "Stage one (CNN)", "adam": "Stage two, Adam head", "sgd": "Stage two, SGD head"}


@dataclass
class Models:
    """A trained stage-one CNN, the same network cut at its last hidden layer, and both stage-two heads."""

    stage1: Any
    extractor: Any
    heads: dict[str, Any]
    class_names: list[str]
    input_shape: tuple[int, int, int]
    fused: Any = None
    """One model, three outputs (stage1, adam, sgd): what :func:`predict_array` calls."""

    @property
    def channels(self) -> int:
        return int(self.input_shape[-1])


@dataclass
class Prediction:
    image: np.ndarray
    """The exact uint8 ``HxWxC`` array the models saw."""
    probabilities: dict[str, np.ndarray]
    """``"stage1"``, ``"adam"``, ``"sgd"`` -> class probabilities (sum 1)."""
    class_names: list[str]
    inverted: bool = False
    """Whether the photo was inverted (light-on-dark) before the model saw it."""
    extra: dict[str, Any] = field(default_factory=dict)

    def top(self, method: str) -> tuple[str, float]:
        probs = self.probabilities[method]
        i = int(np.argmax(probs))
        return self.class_names[i], float(probs[i])


def guess_class_names(num_classes: int, input_shape: tuple[int, ...]) -> list[str]:
    """Class names when the caller has none: the Keras datasets' by shape, else ``class 0..n-1``."""
    if num_classes == 10 and tuple(input_shape) == (28, 28, 1):
        return list(FASHION_CLASSES)
    if num_classes == 10 and tuple(input_shape) == (32, 32, 3):
        return list(CIFAR_CLASSES)
    return [f"class {i}" for i in range(num_classes)]


def load_models(paths: dict[str, Path], class_names: list[str] | None = None) -> Models:
    """Load ``paths["stage1"]``, ``paths["adam"]`` and ``paths["sgd"]`` (``.keras`` files)."""
    import keras

    from .models import FEATURE_LAYER, feature_extractor

    missing = [name for name in ("stage1", *HEADS) if name not in paths or not Path(paths[name]).is_file()]
    if missing:
        raise FileNotFoundError(f"model file(s) missing: {', '.join(missing)}")
    stage1 = keras.saving.load_model(paths["stage1"], compile=False)
    heads = {name: keras.saving.load_model(paths[name], compile=False) for name in HEADS}
    input_shape = tuple(int(d) for d in stage1.input_shape[1:])
    num_classes = int(stage1.output_shape[-1])
    names = list(class_names) if class_names else guess_class_names(num_classes, input_shape)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a model with {num_classes} outputs")
    extractor = feature_extractor(stage1)
    features = stage1.get_layer(FEATURE_LAYER).output
    outputs = [stage1.output] + [_copy_head(heads[name], f"head_{name}")(features) for name in HEADS]
    fused = keras.Model(stage1.input, outputs, name="classify_fused")
    return Models(stage1, extractor, heads, names, input_shape, fused)  # type: ignore[arg-type]


def _copy_head(head: Any, name: str) -> Any:
    """The head's softmax layer, re-created with its weights so it can sit on top of stage one's graph."""
    import keras

    layer = head.layers[-1]
    copy = keras.layers.Dense(layer.units, activation=layer.activation, name=name)
    copy.build((None, layer.kernel.shape[0]))
    copy.set_weights(layer.get_weights())
    return copy


def should_invert(image: np.ndarray) -> bool:
    """True when the border is brighter than the centre: a dark object on a light background, the opposite of
    Fashion-MNIST's light-on-dark items."""
    gray = image.astype(np.float32).mean(axis=-1) if image.ndim == 3 else image.astype(np.float32)
    h, w = gray.shape
    bh, bw = max(1, h // 8), max(1, w // 8)
    border = np.concatenate([gray[:bh].ravel(), gray[-bh:].ravel(), gray[:, :bw].ravel(), gray[:, -bw:].ravel()])
    centre = gray[h // 4: h - h // 4, w // 4: w - w // 4]
    return float(border.mean()) > float(centre.mean())


def prepare(models: Models, data: bytes, *, invert: bool | None = None,
            max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, bool]:
    """Decode ``data`` to the model's input (uint8 ``HxWxC``); returns it and whether it was inverted."""
    h, w, c = models.input_shape
    image = decode_image(data, size=(w, h), grayscale=(c == 1), max_pixels=max_pixels)
    inverted = False
    if c == 1:
        inverted = should_invert(image) if invert is None else bool(invert)
        if inverted:
            image = 255 - image
    return np.ascontiguousarray(image, dtype=np.uint8), inverted


def predict_array(models: Models, image: np.ndarray) -> dict[str, np.ndarray]:
    """Class probabilities of the three methods for one uint8 image already at the model's input shape."""
    if tuple(image.shape) != tuple(models.input_shape):
        raise ValueError(f"image shape {image.shape} is not the model's input {models.input_shape}")
    x = image[None].astype(np.float32)  # uint8 values as float; the model's Rescaling layer does the rest
    outputs = models.fused.predict_on_batch(x)
    return {name: np.asarray(out[0], dtype=np.float64) for name, out in zip(("stage1", *HEADS), outputs)}


def classify(models: Models, data: bytes, *, invert: bool | None = None,
             max_pixels: int = DEFAULT_MAX_PIXELS) -> Prediction:
    """Decode the photo as the model expects it and return all three methods' class probabilities.

    Raises :class:`core.imageio.ImageError` with a user-facing message for anything that is not a usable image.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError("Expected the bytes of an image file.")
    image, inverted = prepare(models, bytes(data), invert=invert, max_pixels=max_pixels)
    return Prediction(image, predict_array(models, image), list(models.class_names), inverted)
