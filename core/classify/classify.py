"""Classify one photo with a trained model set: stage one and both stage-two heads, side by side.

The photo goes through :func:`core.data.imageio.decode_image`, the function the folder loaders use, at the model's
input size (grayscale for one-channel models), so the model sees exactly the kind of pixels it was trained on.
The models rescale uint8 pixels themselves; nothing else is done to the array. For speed the three are fused
into one compiled model with three outputs (stage one's softmax and both heads on the shared features): one CNN
pass per photo, called with ``predict_on_batch`` rather than ``predict``, which sets up a data pipeline per call
(bench/: 3.6 ms instead of 28.6 ms for a 128x128 PNG on the Fashion-MNIST model). When the model set has
out-of-distribution statistics (:mod:`core.classify.ood`), the fused model also outputs the features that check
scores (every convolution averaged over the image, and the last hidden layer), so it costs no extra pass.

Thread safety: Streamlit serves sessions from several threads and shares one loaded model set between them
(``st.cache_resource``). Keras' JAX backend keeps a model's state in Python objects that a call swaps in and
out, so two simultaneous calls on one model can corrupt each other; every call on a :class:`Models` holds
its ``lock``. Different model sets still run in parallel.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.imageio import DEFAULT_MAX_PIXELS, ImageError, decode_image
from ..protocol.vocabulary import HEADS, INPUT_SHAPES, KERAS_DATASETS, KNOWN_CLASSES, METHODS, NUM_CLASSES
from .ood import OodError, OodStats, Verdict


@dataclass
class Models:
    """A trained stage-one CNN, the same network cut at its last hidden layer, and both stage-two heads."""

    stage1: Any
    extractor: Any
    heads: dict[str, Any]
    class_names: list[str]
    input_shape: tuple[int, int, int]
    fused: Any = None
    """One model: stage1, adam and sgd probabilities, then the features ``ood`` scores (if any)."""
    ood: OodStats | None = None
    """Out-of-distribution statistics; None for a model set bundled without them (the user's own runs)."""
    ood_problem: str | None = None
    """Why a statistics file that exists could not be used (then ``ood`` is None and the model still answers)."""
    lock: Any = field(default_factory=threading.RLock, repr=False)
    explainer: Any = None
    """:class:`core.classify.explain.GradCam`, built on first use."""

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
    features: list[np.ndarray] = field(default_factory=list)
    """Stage one's features at the depths the out-of-distribution check scores (empty without statistics)."""
    ood: Verdict | None = None
    """How unlike the model's training images the photo is (None: the model has no statistics)."""

    def top(self, method: str) -> tuple[str, float]:
        probs = self.probabilities[method]
        i = int(np.argmax(probs))
        return self.class_names[i], float(probs[i])


def guess_class_names(num_classes: int, input_shape: tuple[int, ...]) -> list[str]:
    """Class names when the caller has none: the Keras datasets' by shape, else ``class 0..n-1``."""
    for dataset in KERAS_DATASETS:
        if num_classes == NUM_CLASSES[dataset] and tuple(input_shape) == INPUT_SHAPES[dataset]:
            return list(KNOWN_CLASSES[dataset])
    return [f"class {i}" for i in range(num_classes)]


def load_models(paths: dict[str, Path], class_names: list[str] | None = None,
                ood_path: Path | None = None) -> Models:
    """Load ``paths["stage1"]``, ``paths["adam"]`` and ``paths["sgd"]`` (``.keras`` files or compact
    ``.npz``, :mod:`core.models.compact`) and, if given, the out-of-distribution statistics."""
    import keras

    from ..models.compact import load_model_file
    from ..models.models import FEATURE_LAYER, feature_extractor
    from .ood import probe_outputs

    missing = [name for name in METHODS if name not in paths or not Path(paths[name]).is_file()]
    if missing:
        raise FileNotFoundError(f"model file(s) missing: {', '.join(missing)}")
    stage1 = load_model_file(paths["stage1"])
    heads = {name: load_model_file(paths[name]) for name in HEADS}
    input_shape = tuple(int(d) for d in stage1.input_shape[1:])
    if len(input_shape) != 3:
        raise ValueError(f"this stage one takes inputs of shape {input_shape}, not images: it cannot classify photos")
    num_classes = int(stage1.output_shape[-1])
    names = list(class_names) if class_names else guess_class_names(num_classes, input_shape)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a model with {num_classes} outputs")
    extractor = feature_extractor(stage1)
    features = stage1.get_layer(FEATURE_LAYER).output
    outputs = [stage1.output] + [_copy_head(heads[name], f"head_{name}")(features) for name in HEADS]
    stats, problem = None, None
    if ood_path:
        try:
            stats = OodStats.load(ood_path)
        except OodError as exc:
            problem = str(exc)
    probes = probe_outputs(stage1, stats.layers) if stats else []
    fused = keras.Model(stage1.input, outputs + probes, name="classify_fused")
    return Models(stage1, extractor, heads, names, input_shape, fused, stats,  # type: ignore[arg-type]
                  ood_problem=problem)


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
    return predict_with_features(models, image)[0]


def predict_with_features(models: Models, image: np.ndarray) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """:func:`predict_array` plus the features the out-of-distribution check scores, from one pass."""
    if tuple(image.shape) != tuple(models.input_shape):
        raise ValueError(f"image shape {image.shape} is not the model's input {models.input_shape}")
    x = image[None].astype(np.float32)  # uint8 values as float; the model's Rescaling layer does the rest
    with models.lock:
        outputs = models.fused.predict_on_batch(x)
    probs = {name: np.asarray(out[0], dtype=np.float64) for name, out in zip(METHODS, outputs)}
    return probs, [np.asarray(out[0], dtype=np.float64) for out in outputs[1 + len(HEADS):]]


def classify(models: Models, data: bytes, *, invert: bool | None = None,
             max_pixels: int = DEFAULT_MAX_PIXELS) -> Prediction:
    """Decode the photo as the model expects it and return all three methods' class probabilities, with the
    out-of-distribution verdict when the model has statistics.

    Raises :class:`core.data.imageio.ImageError` with a user-facing message for anything that is not a usable image.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError("Expected the bytes of an image file.")
    image, inverted = prepare(models, bytes(data), invert=invert, max_pixels=max_pixels)
    return _predict(models, image, inverted)


def _predict(models: Models, image: np.ndarray, inverted: bool) -> Prediction:
    probs, features = predict_with_features(models, image)
    verdict = models.ood.check(features, probs["stage1"]) if models.ood is not None else None
    return Prediction(image, probs, list(models.class_names), inverted, features=features, ood=verdict)


def fit_verdicts(candidates: Sequence[Models], data: bytes, *,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Verdict | None]:
    """Each model set's out-of-distribution verdict on the photo (None for a model without statistics)."""
    return [p.ood if p is not None else None for p in fit_predictions(candidates, data, max_pixels=max_pixels)]


def fit_predictions(candidates: Sequence[Models], data: bytes, *,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Prediction | None]:
    """Each model set's prediction on the photo, with its features and out-of-distribution verdict (None for a
    model without statistics): what the preselection reads. The photo is decoded once per input shape."""
    decoded: dict[tuple[int, ...], tuple[np.ndarray, bool]] = {}
    out: list[Prediction | None] = []
    for models in candidates:
        if models.ood is None:
            out.append(None)
            continue
        if models.input_shape not in decoded:
            decoded[models.input_shape] = prepare(models, bytes(data), max_pixels=max_pixels)
        out.append(_predict(models, *decoded[models.input_shape]))
    return out


def best_fit(verdicts: Sequence[Verdict | None]) -> int | None:
    """Index of the model whose own test images the photo is most typical of, None if no model has statistics.

    Models are compared by the photo's rank among each model's test images (the share that scored lower),
    not by the score's ratio to the threshold: a model trained on a varied set (Face Mask) has a long tail of
    test scores and so a high threshold, and by ratio every photo looks at home there. With the shipped
    bundles, lowest ratio picked the photo's own model for 26 % of 150 pet photos; lowest rank for 79 % of pet
    photos, 80 % of faces and 96 % of Fashion-MNIST items (docs/pages.md, "Classify"). A photo beyond every model's
    test images ranks 1.0 everywhere; the ratio then decides.
    """
    order = fit_order(verdicts)
    return order[0] if order else None


def fit_order(verdicts: Sequence[Verdict | None]) -> list[int]:
    """Indices of the models with statistics, the one the photo is most typical of first (:func:`best_fit`)."""
    scored = sorted((v.score_rank, v.ratio, i) for i, v in enumerate(verdicts) if v is not None)
    return [i for _, _, i in scored]


def heat_map(models: Models, pred: Prediction) -> np.ndarray:
    """Grad-CAM of stage one's top class over the image the model saw (floats in [0, 1], image size)."""
    from . import explain

    top = int(np.argmax(pred.probabilities["stage1"]))
    with models.lock:
        if models.explainer is None:
            models.explainer = explain.build(models.stage1)
        return explain.heat_map(models.explainer, pred.image, top)
