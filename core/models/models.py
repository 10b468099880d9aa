"""Stage-one CNNs (the paper's four, one per dataset, and the related reports' models) and the stage-two head.

The paper's layer figures did not survive text extraction; each builder follows the paper's prose (layer
counts, kernel numbers, dropout rates, dense units) and, where the prose is silent, the Kaggle/paper source it
cites, in the usual Keras idiom. The related reports' models are in :mod:`core.models.report_models` and
:mod:`core.models.backbones`; :data:`REGISTRY` holds every builder by id (what ``Protocol(architecture=...)`` and
``--architecture`` name; :mod:`core.protocol.arch_spec` describes each). Every model:

- takes uint8 pixels and rescales them itself (``Rescaling(1/255)``), so data stays uint8 in memory (report
  002's frozen-backbone models instead take the backbone's cached feature vectors);
- starts with the augmentation layers when the protocol asks for them (active only while training; a ZCA
  whitening preset adds a fitted layer after the rescaling, see :mod:`core.data.augment`);
- names the layer that feeds the softmax :data:`FEATURE_LAYER` and the softmax layer :data:`SOFTMAX_LAYER`,
  so stage two can cut the network there.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Iterator

import keras
import numpy as np
from keras import layers

from ..data import augment
from . import backbones, report_models
from ..protocol.arch_spec import ARCH_INFO, FEATURE_LAYER, SOFTMAX_LAYER, info
from ..protocol.config import Augmentation, Protocol

__all__ = ["FEATURE_LAYER", "SOFTMAX_LAYER", "ARCHITECTURES", "REGISTRY", "build_stage1", "build_for_protocol"]


def augmentation_layers(aug: Augmentation, seed: int | None = None) -> list[layers.Layer]:
    """The paper's ImageDataGenerator settings as Keras 3 preprocessing layers (identity at inference)."""
    return augment.random_layers(augment.from_augmentation(aug), seed)


def _fashion_mnist(num_classes: int) -> list[layers.Layer]:
    """Kadam et al.'s Architecture 3: three 64x2x2 ReLU convs, two 2x2 max-pools, three dropouts of 0.25,
    Dense 64 ReLU, softmax. Padding 'same' on the first conv keeps 28x28 (Keras default elsewhere)."""
    return [
        layers.Conv2D(64, 2, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Conv2D(64, 2, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Conv2D(64, 2, activation="relu"),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(64, activation="relu", name=FEATURE_LAYER),
        layers.Dense(num_classes, activation="softmax", name=SOFTMAX_LAYER),
    ]


def _cifar10(num_classes: int) -> list[layers.Layer]:
    """Kaggle 'Model 4': conv pairs of 32, 64, 128 (3x3, same) each followed by batch-norm, a max-pool and
    dropout 0.2/0.3/0.4 per block; Dense 128 + batch-norm + dropout 0.5; softmax. 6 conv, 7 BN, 3 pools,
    4 dropouts. The dropout before the softmax is the feature layer (identity at inference)."""
    out: list[layers.Layer] = []
    for filters, rate in ((32, 0.2), (64, 0.3), (128, 0.4)):
        out += [
            layers.Conv2D(filters, 3, padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.Conv2D(filters, 3, padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(2),
            layers.Dropout(rate),
        ]
    return out + [
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.BatchNormalization(),
        layers.Dropout(0.5, name=FEATURE_LAYER),
        layers.Dense(num_classes, activation="softmax", name=SOFTMAX_LAYER),
    ]


def _dogs_cats(num_classes: int) -> list[layers.Layer]:
    """uysimty's Kaggle model: conv 32/64/128 (3x3) each with batch-norm, 2x2 max-pool and dropout 0.25;
    Dense 512 + batch-norm + dropout 0.5; softmax. 3 conv, 3 pools, 4 BN, 4 dropouts."""
    out: list[layers.Layer] = []
    for filters in (32, 64, 128):
        out += [
            layers.Conv2D(filters, 3, activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
        ]
    return out + [
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.BatchNormalization(),
        layers.Dropout(0.5, name=FEATURE_LAYER),
        layers.Dense(num_classes, activation="softmax", name=SOFTMAX_LAYER),
    ]


def _face_mask(num_classes: int) -> list[layers.Layer]:
    """Kaggle 'Mask Detection' model 2 as the paper counts it: 3 conv (32, 64, 128; 3x3), 3 max-pools,
    1 batch-norm, 3 dropouts, 2 dense (128 ReLU, softmax). The order of BN and dropouts is our reading."""
    return [
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Conv2D(128, 3, activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.5, name=FEATURE_LAYER),
        layers.Dense(num_classes, activation="softmax", name=SOFTMAX_LAYER),
    ]


ARCHITECTURES: dict[str, Callable[[int], list[layers.Layer]]] = {
    "fashion-mnist": _fashion_mnist,
    "cifar10": _cifar10,
    "dogs-cats": _dogs_cats,
    "face-mask": _face_mask,
}
"""The paper's four builders (layers after the rescaling, given the number of classes)."""

Builder = Callable[[int, tuple, "str | None"], list]
"""``(num_classes, input_shape, weights) -> layers``: the signature of every registered builder."""


def _paper(builder: Callable[[int], list[layers.Layer]]) -> Builder:
    def build(num_classes: int, input_shape: tuple, weights: str | None = None) -> list:
        return builder(num_classes)
    build.__doc__ = builder.__doc__
    return build


REGISTRY: dict[str, Builder] = {
    **{name: _paper(builder) for name, builder in ARCHITECTURES.items()},
    **report_models.BUILDERS,
    **backbones.BUILDERS,
}
"""Every stage-one builder by architecture id: the paper's and the related reports'."""
assert set(REGISTRY) == set(ARCH_INFO), "core.protocol.arch_spec.ARCH_INFO and the builders must list the same ids"


def build_stage1(architecture: str, input_shape: tuple[int, ...], num_classes: int,
                 augmentation: Augmentation | augment.Preset | None = None, seed: int | None = None,
                 precision: str = "float32", weights: str | None = None) -> keras.Model:
    """The stage-one model, uncompiled. ``augmentation=None`` builds it without augmentation layers.

    ``augmentation`` is the paper's :class:`~core.protocol.config.Augmentation` or any :class:`core.data.augment.Preset`.
    ``precision="bfloat16"`` builds every layer under Keras' ``mixed_bfloat16`` policy (bf16 compute, float32
    weights) except the softmax, which stays float32 so probabilities and the loss keep full precision.
    A frozen-backbone architecture (report 002) takes feature vectors of shape ``input_shape`` and has no
    rescaling or augmentation. ``weights`` are the ImageNet backbones' (see :mod:`core.models.backbones`).
    """
    spec = info(architecture)
    preset = augment.from_augmentation(augmentation) if isinstance(augmentation, Augmentation) else augmentation
    if spec.frozen and preset is not None:
        raise ValueError(f"{architecture} trains on cached features of a frozen backbone; it cannot augment")
    with dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32"):
        inputs = keras.Input(shape=tuple(input_shape), name="features_in" if spec.frozen else "pixels")
        x = inputs
        if not spec.frozen:
            for layer in augment.random_layers(preset, seed) if preset is not None else []:
                x = layer(x)
            x = layers.Rescaling(1.0 / 255, name="rescale")(x)
            for layer in augment.whitening_layers(preset):
                x = layer(x)
        stack = REGISTRY[architecture](num_classes, tuple(input_shape), weights)
        stack[-1].dtype_policy = "float32"
        for layer in stack:
            x = layer(x)
        return keras.Model(inputs, x, name=f"stage1_{architecture.replace('-', '_')}")


def build_for_protocol(protocol: Protocol, input_shape: tuple[int, ...], num_classes: int, seed: int | None,
                       x_train: np.ndarray | None = None) -> keras.Model:
    """Stage one exactly as ``protocol`` says (architecture, augmentation preset, precision, weights), with
    data-dependent preprocessing (ZCA whitening) fitted on ``x_train``, the training split only."""
    model = build_stage1(protocol.model_id, input_shape, num_classes, augment.preset_for(protocol), seed,
                         protocol.precision, weights=protocol.weights)
    set_batchnorm_momentum(model, protocol.bn_momentum)
    if protocol.no_dropout:
        switch_off_dropout(model)
    if x_train is not None:
        augment.fit_whitening(model, x_train)
    return model


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> int:
    """Give every BatchNormalization layer (nested backbones' too) this moving-average momentum; returns how
    many layers it set. Keras reads the attribute at each training step and saves it with the model."""
    found = batchnorm_layers(model)
    for layer in found:
        layer.momentum = float(momentum)
    return len(found)


def switch_off_dropout(model: keras.Model) -> int:
    """Set every Dropout layer's rate (nested backbones' too) to 0; returns how many. The layers stay, so
    layer names (the feature layer is a Dropout) and weights are unchanged; Keras reads ``rate`` when the
    layer is called, on the plain and the lock-step engine alike."""
    found = _layers_of(model, layers.Dropout)
    for layer in found:
        layer.rate = 0.0
    return len(found)


def _layers_of(model: keras.Model, kind: type) -> list[layers.Layer]:
    out: list[layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, kind):
            out.append(layer)
        elif isinstance(layer, keras.Model):
            out += _layers_of(layer, kind)
    return out


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Total, trainable and non-trainable parameters, as Keras' summary counts them."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(model.count_params())
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under a Keras dtype policy without leaving it set for the rest of the process."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def batchnorm_layers(model: keras.Model) -> list[layers.BatchNormalization]:
    """Every BatchNormalization layer in order, including those of a nested backbone (report 004's ResNet50)."""
    return _layers_of(model, layers.BatchNormalization)


class SampleMoments(layers.Layer):
    """Each sample's mean and (population) variance of every channel of its input, over every axis but the
    batch and the channel axis, in float32: all that re-estimating a BatchNormalization layer needs from a
    batch, computed where the model runs. Only two ``(batch, channels)`` arrays leave the device, not the
    activations (which are 2 GB per batch of 256 for the Dogs & Cats CNN's first layer)."""

    def __init__(self, channel_axis: int, **kwargs):
        super().__init__(**kwargs)
        self.channel_axis = channel_axis

    def call(self, a):
        a = keras.ops.cast(a, "float32")
        rank = len(a.shape)
        axes = [i for i in range(1, rank) if i != self.channel_axis % rank]
        if not axes:  # a Dense layer's BatchNorm: each sample is one value per channel
            return a, keras.ops.zeros_like(a)
        mean = keras.ops.mean(a, axis=axes, keepdims=True)
        variance = keras.ops.mean(keras.ops.square(a - mean), axis=axes)
        return keras.ops.squeeze(mean, axis=axes), variance


_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Each model's probes, built once: a probe's compiled predict function is then reused for every call (both
weight sets of a repeat; every repeat of the lock-step engine, which passes all of them through one model)."""


def moments_of(bn: layers.BatchNormalization, tensor) -> tuple:
    """Per-sample ``(means, variances)`` of ``tensor`` over every axis but ``bn``'s channel axis (a functional
    graph node: build a probe model on it)."""
    axis = bn.axis if isinstance(bn.axis, int) else bn.axis[0]
    return SampleMoments(axis, name=f"moments_{bn.name}")(tensor)


def combine_moments(means: np.ndarray, variances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and population variance over all samples of axis -2 from each sample's channel means and
    variances (``(..., samples, channels)``), in float64 by the law of total variance: every sample has the
    same number of positions, so the overall variance is the mean within-sample variance plus the variance
    of the sample means. Shared by both engines' re-estimation: one arithmetic, whichever engine ran the model."""
    means, variances = np.asarray(means, np.float64), np.asarray(variances, np.float64)
    mean = means.mean(axis=-2)
    variance = variances.mean(axis=-2) + np.square(means - mean[..., None, :]).mean(axis=-2)
    return mean, variance


def _batchnorm_probes(model: keras.Model) -> list[tuple[layers.BatchNormalization, Callable]]:
    """``(layer, batch -> per-sample (means, variances) of the layer's input)`` for every BatchNormalization
    layer, in order (see :class:`SampleMoments`).

    A nested model (report 004's ResNet50: 53 BatchNorm layers) is a link of the stage-one chain built by
    :func:`build_stage1`, fed by the layer before it. Its layers' inputs come from one multi-output probe,
    compiled once: the moving statistics are variables it reads at each call, so every pass sees the layers
    re-estimated so far (one compiled probe per layer would cost a compilation each).
    """
    if model in _PROBES:
        return _PROBES[model]
    out: list[tuple[layers.BatchNormalization, Callable]] = []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, layers.BatchNormalization):
            out.append((layer, keras.Model(model.input, moments_of(layer, layer.input)).predict_on_batch))
        elif isinstance(layer, keras.Model) and batchnorm_layers(layer):
            inner = batchnorm_layers(layer)
            before = keras.Model(model.input, model.layers[i - 1].output)
            probe = keras.Model(layer.input, [m for bn in inner for m in moments_of(bn, bn.input)])
            for k, bn in enumerate(inner):
                out.append((bn, lambda batch, k=k, probe=probe, before=before:
                            probe.predict_on_batch(before.predict_on_batch(batch))[2 * k:2 * k + 2]))
    _PROBES[model] = out
    return out


def reestimate_batchnorm(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> int:
    """Replace every BatchNormalization layer's moving mean and variance by the exact statistics of its input
    over ``x``; returns the number of layers changed. No weight is trained.

    Why: during training BN normalises with each batch's statistics and keeps exponential moving averages
    for inference. With few steps per epoch those averages lag behind the weights, and the network scores
    worse in inference than its weights deserve. This measures how much of that lag explains stage one's
    deficit. Layers are done in order, each with every upstream layer in inference mode (and upstream BN
    layers already re-estimated), augmentation and dropout off. The variance is the population (biased)
    variance, which is what BN computes per batch: each sample's channel means and variances come from the
    model's device (:class:`SampleMoments`), and are combined here in float64 by the law of total variance
    (every sample has the same number of positions).
    """
    found = _batchnorm_probes(model)
    for bn, probe in found:
        means, variances = [], []
        for start in range(0, len(x), batch_size):
            mean, variance = probe(x[start:start + batch_size])
            means.append(np.asarray(mean, np.float64))
            variances.append(np.asarray(variance, np.float64))
        mean, variance = combine_moments(np.concatenate(means), np.concatenate(variances))
        bn.moving_mean.assign(mean.astype(np.float32))
        bn.moving_variance.assign(variance.astype(np.float32))
    return len(found)


PRECISE_BN_ITERS = 200
"""Training batches PreciseBN averages (fvcore's ``update_bn_stats`` default)."""


def precise_bn(model: keras.Model, x: np.ndarray, *, iters: int = PRECISE_BN_ITERS, batch_size: int = 32,
               bn_only: bool = False, seed: int = 0) -> None:
    """PreciseBN (Wu & Johnson 2021; fvcore's ``update_bn_stats``): every BatchNorm layer's moving statistics
    become the plain average of ``iters`` training batches' statistics.

    Why beside :func:`reestimate_batchnorm`: that one computes exact statistics of clean images; this one
    averages what training mode sees, so the two tell apart the moving averages' lag (which averaging removes)
    from the difference between training batches and clean images. As fvcore runs it the whole model is in
    training mode: augmentation and dropout on, as the batches training saw. ``bn_only`` calls the layers one
    after another (a chain, as every stage-one CNN here is) with only BatchNorm in training mode. ``seed``
    draws the batches; the result still varies a little from run to run (on the shipped 64 px models by a few
    test images in 2,000), since training mode's random draws and TensorFlow's threaded sums are not pinned."""
    found = batchnorm_layers(model)
    momenta = [layer.momentum for layer in found]
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(x)) for _ in range(iters * batch_size // len(x) + 1)])
    try:
        for i in range(iters):
            for layer in found:
                layer.momentum = 1.0 - 1.0 / (i + 1)  # Keras keeps `momentum` of the old value: a running mean
            batch = x[order[i * batch_size:(i + 1) * batch_size]]
            if not bn_only:
                model(batch, training=True)
                continue
            out = batch
            for layer in model.layers:
                if not isinstance(layer, layers.InputLayer):
                    out = layer(out, training=isinstance(layer, layers.BatchNormalization))
    finally:
        for layer, momentum in zip(found, momenta):
            layer.momentum = momentum


def feature_extractor(model: keras.Model) -> keras.Model:
    """The stage-one network cut at the last hidden layer (shares weights with ``model``)."""
    return keras.Model(model.input, model.get_layer(FEATURE_LAYER).output, name="feature_extractor")


def build_head(feature_dim: int, num_classes: int, warm_from: keras.Model | None = None) -> keras.Model:
    """Stage two's brand-new model: a single softmax Dense layer on the extracted features.

    ``warm_from`` copies stage one's softmax weights into it (an option the paper does not use).
    """
    inputs = keras.Input(shape=(feature_dim,), name="features")
    head = layers.Dense(num_classes, activation="softmax", name=SOFTMAX_LAYER)
    model = keras.Model(inputs, head(inputs), name="stage2_head")
    if warm_from is not None:
        head.set_weights(warm_from.get_layer(SOFTMAX_LAYER).get_weights())
    return model


def layer_table(model: keras.Model) -> list[dict]:
    """Rows of (name, type, output shape, parameters) for the Architectures page."""
    rows = []
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        rows.append({
            "name": layer.name,
            "type": type(layer).__name__,
            "output shape": str(tuple(shape.shape)) if shape is not None else "",
            "parameters": int(layer.count_params()),
        })
    return rows
