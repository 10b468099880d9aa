"""Report 002's frozen ImageNet backbones, their features computed once and cached, and ImageNet weights.

Report 002 froze VGG-16/19 and ResNet-18/34/50 and trained only a new 10-way final layer, on inputs resized to
224x224 and normalised as ImageNet. A frozen backbone without augmentation gives every image the same feature
vector in every epoch, repeat and sweep point, so the vectors are computed once per (backbone, weights, split
pixels) and stored as ``.npy`` files under ``<cache>/features`` (:func:`cached_features`). Stage one is then the
new final layer on those vectors (:data:`HEADS`: a linear softmax, with VGG's classifier dropout before it):
a sweep point trains in seconds, and only the first ever computes the backbone.

Backbones (each ends where report 002 put the new layer, so its output is the feature vector):

- VGG-16/19: ``keras.applications`` with their two 4,096-unit fully connected layers (torchvision's classifier
  without its last layer); features = ``fc2`` (4,096). Caffe normalisation (BGR, ImageNet mean), as Keras'
  ImageNet weights expect.
- ResNet-50: ``keras.applications.ResNet50`` with global average pooling (2,048); Caffe normalisation.
- ResNet-18/34: :func:`resnet`, torchvision's layout in plain Keras layers (any backend), global average pooling
  (512); torchvision's normalisation (mean 0.485/0.456/0.406, std 0.229/0.224/0.225). With a 1,000-way top they
  have torchvision's 11,689,512 and 21,797,672 trainable parameters (tested). ``keras.applications`` has no
  ResNet-18/34, and ``keras-hub`` (which has) requires ``tensorflow-text`` on Linux, which pulls a second, full
  TensorFlow beside ``tensorflow-cpu``: so there is no download for them; give a ``.weights.h5`` file saved from
  this builder (``--weights PATH``).

Weights (:attr:`core.protocol.config.Protocol.weights`): ``None`` is a random initialisation (seeded, so cached features
stay valid; a frozen random backbone is a weak baseline, say so beside any result), ``"imagenet"`` Keras'
download (needs a network once), or a local file. Report 004's fine-tuned ResNet50/VGG16 use :func:`application`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
from keras import layers

from ..protocol.arch_spec import FEATURE_LAYER, SOFTMAX_LAYER
from ..protocol.files import atomic_write

INPUT_SIZE = 224
"""Side the images are resized to before the backbone (report 002: the backbones' ImageNet training size)."""
BACKBONE_SEED = 0
"""Seed of a randomly initialised backbone: the same weights in every repeat, so its features can be cached."""
FEATURE_BATCH = 32
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

Progress = Callable[[dict[str, Any]], None]


class WeightsUnavailable(ValueError):
    """The requested backbone weights cannot be had; the message says how to provide them."""


# ------------------------------------------------------------------------------------------------ weights

def application(factory: Callable[..., keras.Model], weights: str | None, **kwargs: Any) -> keras.Model:
    """A ``keras.applications`` model with ``weights`` None, ``"imagenet"`` (downloaded) or a local file."""
    if weights not in (None, "imagenet"):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"weights file {weights} does not exist")
        weights = str(path)
    try:
        return factory(weights=weights, **kwargs)
    except Exception as exc:  # noqa: BLE001 - network, disk and format errors alike
        if weights == "imagenet":
            raise WeightsUnavailable(
                f"ImageNet weights for {factory.__name__} could not be downloaded ({type(exc).__name__}: "
                f"{str(exc)[:200]}). With no network, download them elsewhere and give the file with "
                "--weights PATH, or train from random initialisation (no --weights).") from exc
        if weights is not None:
            raise WeightsUnavailable(f"{weights} does not hold {factory.__name__} weights "
                                     f"({type(exc).__name__}: {str(exc)[:200]})") from exc
        raise


def weights_identity(weights: str | None) -> str:
    """What the cached features depend on: the file's content hash, ``imagenet``, or the random seed."""
    if weights is None:
        return f"random:{BACKBONE_SEED}:keras-{keras.__version__}"
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    stat = path.stat()
    return _file_hash(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


_HASHES: dict[tuple, str] = {}


def _file_hash(path: str, size: int, mtime: int) -> str:
    key = (path, size, mtime)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = "sha256:" + digest.hexdigest()
    return _HASHES[key]


# ------------------------------------------------------------------------------------- ResNet-18 and -34

def resnet(blocks: tuple[int, ...], input_shape: tuple[int, int, int] | None = None,
           num_classes: int | None = None, name: str = "resnet") -> keras.Model:
    """torchvision's ResNet with basic blocks (``(2, 2, 2, 2)``: ResNet-18, ``(3, 4, 6, 3)``: ResNet-34).

    Same layers and padding as torchvision (explicit zero padding, so stride-2 convolutions see the same
    pixels), BatchNorm epsilon 1e-5 and momentum 0.9 (torch's 0.1). Ends with global average pooling, or with
    a ``num_classes``-way linear ``fc`` layer when given (to compare parameter counts with torchvision).
    """
    inputs = keras.Input(input_shape or (INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x = layers.ZeroPadding2D(3)(inputs)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1")(x)
    x = _bn("bn1")(x)
    x = layers.ReLU()(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    for stage, (count, filters) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        for b in range(count):
            x = _basic_block(x, filters, 2 if stage > 1 and b == 0 else 1, f"layer{stage}_{b}")
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    if num_classes:
        x = layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, x, name=name)


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)


def _basic_block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = layers.ZeroPadding2D(1)(x)
    y = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=f"{name}_conv1")(y)
    y = layers.ReLU()(_bn(f"{name}_bn1")(y))
    y = layers.ZeroPadding2D(1)(y)
    y = _bn(f"{name}_bn2")(layers.Conv2D(filters, 3, use_bias=False, name=f"{name}_conv2")(y))
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_down")(x)
        shortcut = _bn(f"{name}_down_bn")(shortcut)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def _own_resnet(blocks: tuple[int, ...], name: str) -> Callable[[str | None], keras.Model]:
    def build(weights: str | None) -> keras.Model:
        model = resnet(blocks, name=name)
        if weights == "imagenet":
            raise WeightsUnavailable(f"there is no Keras download of ImageNet weights for {name}; give a "
                                     f".weights.h5 file saved from core.models.backbones.resnet with --weights PATH, or "
                                     "train from random initialisation (no --weights)")
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise WeightsUnavailable(f"weights file {weights} does not exist")
            try:
                model.load_weights(str(path))
            except Exception as exc:  # noqa: BLE001 - any mismatch is one line for the user
                raise WeightsUnavailable(f"{weights} does not hold {name} weights saved from "
                                         f"core.models.backbones.resnet ({type(exc).__name__}: {str(exc)[:200]})") from exc
        return model
    return build


# ------------------------------------------------------------------------------------------- backbones

@dataclass(frozen=True)
class Backbone:
    """A frozen feature extractor: ``build(weights)`` gives a model from normalised 224x224 images to vectors."""

    build: Callable[[str | None], keras.Model]
    normalisation: str
    """``caffe`` (Keras' ImageNet weights) or ``torch`` (torchvision's)."""
    head_dropout: float
    """Dropout before the new final layer (torchvision's VGG classifier has one; its ResNets do not)."""


def _vgg(factory: Callable[..., keras.Model]) -> Callable[[str | None], keras.Model]:
    def build(weights: str | None) -> keras.Model:
        full = application(factory, weights, include_top=True, input_shape=(INPUT_SIZE, INPUT_SIZE, 3))
        return keras.Model(full.input, full.get_layer("fc2").output, name=full.name)
    return build


def _resnet50(weights: str | None) -> keras.Model:
    return application(keras.applications.ResNet50, weights, include_top=False, pooling="avg",
                       input_shape=(INPUT_SIZE, INPUT_SIZE, 3))


BACKBONES: dict[str, Backbone] = {
    "002-vgg16": Backbone(_vgg(keras.applications.VGG16), "caffe", 0.5),
    "002-vgg19": Backbone(_vgg(keras.applications.VGG19), "caffe", 0.5),
    "002-resnet18": Backbone(_own_resnet((2, 2, 2, 2), "resnet18"), "torch", 0.0),
    "002-resnet34": Backbone(_own_resnet((3, 4, 6, 3), "resnet34"), "torch", 0.0),
    "002-resnet50": Backbone(_resnet50, "caffe", 0.0),
}


def build_backbone(architecture: str, weights: str | None) -> keras.Model:
    """The frozen backbone (a random one is seeded with :data:`BACKBONE_SEED`)."""
    if weights is None:
        keras.utils.set_random_seed(BACKBONE_SEED)
    model = BACKBONES[architecture].build(weights)
    model.trainable = False
    return model


def head_layers(architecture: str) -> Callable[[int, tuple, str | None], list]:
    """Stage one of a frozen-backbone model: the new final layer on the cached features."""
    def build(num_classes: int, input_shape: tuple, weights: str | None = None) -> list:
        rate = BACKBONES[architecture].head_dropout
        cut = layers.Dropout(rate, name=FEATURE_LAYER) if rate else layers.Identity(name=FEATURE_LAYER)
        return [cut, layers.Dense(num_classes, activation="softmax", name=SOFTMAX_LAYER)]
    build.__doc__ = f"Report 002's new final layer on {architecture}'s frozen features."
    return build


BUILDERS = {name: head_layers(name) for name in BACKBONES}


# ----------------------------------------------------------------------------------------- feature cache

def preprocess(images: np.ndarray, normalisation: str) -> np.ndarray:
    """uint8 ``(n, h, w, 3)`` RGB images -> float32 ``(n, 224, 224, 3)`` normalised as the weights expect."""
    import cv2

    resized = np.stack([cv2.resize(img, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
                        for img in images]).astype(np.float32)
    if normalisation == "caffe":
        return resized[..., ::-1] - CAFFE_MEAN_BGR
    return (resized / 255.0 - TORCH_MEAN) / TORCH_STD


def compute_features(model: keras.Model, normalisation: str, images: np.ndarray,
                     batch_size: int = FEATURE_BATCH) -> np.ndarray:
    """The backbone's output for every image, in batches (inference mode)."""
    out = [np.asarray(model.predict_on_batch(preprocess(images[i:i + batch_size], normalisation)),
                      dtype=np.float32) for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, int(model.output_shape[-1])), np.float32)


def feature_key(architecture: str, weights: str | None, images: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(f"{architecture}|{weights_identity(weights)}|{INPUT_SIZE}|{images.shape}|{images.dtype}".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()[:32]


def feature_dir(workdir: str | Path) -> Path:
    """``<cache>/features`` for a repeat's workdir ``<cache>/artefacts/<key>/<repeat>``, so every experiment
    of the cache shares it; a workdir elsewhere keeps its own ``features`` folder."""
    workdir = Path(workdir)
    if workdir.parent.parent.name == "artefacts":
        return workdir.parent.parent.parent / "features"
    return workdir / "features"


def cached_features(architecture: str, weights: str | None, splits: dict[str, np.ndarray], folder: Path,
                    report: Progress = lambda event: None) -> dict[str, np.ndarray]:
    """Each split's features, read from ``folder`` or computed (building the backbone only if one is missing)
    and stored there. Reports ``{"stage": "backbone", "split", "cached", "seconds"}`` per split."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    model = None
    spec = BACKBONES[architecture]
    for split, images in splits.items():
        path = folder / f"{feature_key(architecture, weights, images)}.npy"
        started = time.perf_counter()
        if path.is_file():
            out[split] = np.load(path, allow_pickle=False)
            report({"stage": "backbone", "split": split, "cached": True, "seconds": time.perf_counter() - started})
            continue
        if model is None:
            model = build_backbone(architecture, weights)
        out[split] = compute_features(model, spec.normalisation, images)
        with atomic_write(path) as f:  # two processes may compute the same split: the last rename wins, whole
            np.save(f, out[split], allow_pickle=False)
        report({"stage": "backbone", "split": split, "cached": False, "images": len(images),
                "seconds": time.perf_counter() - started})
    return out
