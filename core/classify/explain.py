"""Why this answer: a Grad-CAM heat map (Selvaraju et al., 2017) of stage one's top class over the image.

Grad-CAM weighs each feature map of the last convolution by how much the class score grows with it (the mean
of the score's gradient over the map), sums the weighted maps and keeps the positive part: the regions whose
activation pushed the model towards its answer. The score is the class's logit (the softmax layer's input
times its kernel plus bias), not its probability, which saturates near 1 and would give vanishing gradients.

Backend-agnostic: everything is ``keras.ops`` except one small gradient helper per backend
(:func:`_gradient`: ``tf.GradientTape`` under TensorFlow, ``jax.grad`` under JAX, ``torch.autograd`` under
PyTorch). The network is split at the last convolution into two Keras models that share the trained layers,
so the gradient is taken with respect to that layer's output, with every layer in inference mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

ALPHA = 0.45
"""Opacity of the heat map over the photo."""


@dataclass
class GradCam:
    """Stage one split at its last convolution: pixels -> feature maps, feature maps -> class logits."""

    to_maps: Any
    to_logits: Callable[[Any], Any]
    layer: str
    compiled: Callable[..., Any] | None = None


def last_conv_layer(model: Any) -> Any:
    """The last layer with a 4-D (batch, height, width, channels) output: Grad-CAM's feature maps."""
    import keras

    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise ValueError(f"{model.name} has no convolution layer to explain")
    return convs[-1]


def build(stage1: Any) -> GradCam:
    """Split ``stage1`` at its last convolution (the two parts share its weights)."""
    import keras
    from keras import ops

    from ..models.models import FEATURE_LAYER, SOFTMAX_LAYER

    conv = last_conv_layer(stage1)
    to_maps = keras.Model(stage1.input, conv.output)
    to_features = keras.Model(conv.output, stage1.get_layer(FEATURE_LAYER).output)
    softmax = stage1.get_layer(SOFTMAX_LAYER)

    def to_logits(maps: Any) -> Any:
        features = to_features(maps, training=False)
        return ops.add(ops.matmul(ops.cast(features, "float32"), ops.cast(softmax.kernel, "float32")),
                       ops.cast(softmax.bias, "float32"))

    return GradCam(to_maps, to_logits, conv.name)


def heat_map(cam: GradCam, image: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM of ``class_index`` for one uint8 ``HxWxC`` image, as floats in [0, 1] at the image's size."""
    from keras import ops

    if cam.compiled is None:
        cam.compiled = _compile(lambda x, c: _weighted_maps(cam, x, c))
    x = ops.convert_to_tensor(image[None].astype(np.float32))
    cam_map = cam.compiled(x, ops.convert_to_tensor(np.int32(class_index)))
    h, w = image.shape[:2]
    resized = ops.image.resize(cam_map, (h, w), interpolation="bilinear")
    return np.clip(ops.convert_to_numpy(resized)[0, ..., 0], 0.0, 1.0)


def _weighted_maps(cam: GradCam, x: Any, class_index: Any) -> Any:
    """The Grad-CAM map at the convolution's resolution, normalised to a peak of 1."""
    from keras import ops

    maps = ops.cast(cam.to_maps(x, training=False), "float32")

    def score(m: Any) -> Any:
        return ops.sum(ops.take(cam.to_logits(m), class_index, axis=1))

    weights = ops.mean(_gradient(score, maps), axis=(1, 2), keepdims=True)
    cam_map = ops.relu(ops.sum(maps * weights, axis=-1, keepdims=True))
    return cam_map / ops.maximum(ops.max(cam_map), 1e-12)


def _gradient(fn: Callable[[Any], Any], x: Any) -> Any:
    """d fn(x) / d x for a scalar-valued ``fn``, with the current Keras backend's own autodiff."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return tape.gradient(y, x)
    if backend == "jax":
        import jax

        return jax.grad(fn)(x)
    if backend == "torch":
        import torch

        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(x), x)
        return grad
    raise NotImplementedError(f"Grad-CAM needs gradients, which the {backend!r} backend does not provide")


def _compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled by the backend (a heat map is one small graph; eager mode spends most of its time in
    dispatch): ``tf.function`` or ``jax.jit``; other backends run it as it is."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True, autograph=False)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def enlarge(image: np.ndarray, size: int = 224) -> np.ndarray:
    """The image as RGB with its longer side at ``size`` px (pixels kept sharp when enlarging, so a 28x28
    input stays readable)."""
    import cv2

    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    dims = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, dims, interpolation=cv2.INTER_NEAREST if scale >= 2 else cv2.INTER_AREA)


def overlay(image: np.ndarray, heat: np.ndarray, size: int = 224, alpha: float = ALPHA) -> np.ndarray:
    """:func:`enlarge`'s picture with ``heat`` (values in [0, 1]) over it in the JET colour map."""
    import cv2

    big = enlarge(image, size)
    heat_big = cv2.resize(heat.astype(np.float32), (big.shape[1], big.shape[0]), interpolation=cv2.INTER_LINEAR)
    colours = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * heat_big), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return np.clip((1 - alpha) * big + alpha * colours, 0, 255).astype(np.uint8)
