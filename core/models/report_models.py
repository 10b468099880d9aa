"""Stage-one models of the related reports 001, 003 and 004, one builder each, as layer lists.

Every builder takes ``(num_classes, input_shape, weights)`` and returns the layers that follow the model's
input rescaling (:func:`core.models.models.build_stage1` adds the input, augmentation and ``Rescaling(1/255)``: all
three reports scale pixels to [0, 1]). The layer feeding the final softmax is named
:data:`~core.protocol.arch_spec.FEATURE_LAYER`, so the paper's second stage cuts each of them there. Where a report
gives a Dense followed by a separate softmax ``Activation``, the two are one ``Dense(..., "softmax")`` here: the
same function, and the softmax layer stage two replaces. Parameter counts below are at each report's input
and are asserted in ``tests/test_report_models.py``.
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers, regularizers

from ..protocol.arch_spec import FEATURE_LAYER, SOFTMAX_LAYER
from .backbones import application

Builder = Callable[[int, tuple, "str | None"], list]


def _softmax(num_classes: int) -> layers.Layer:
    return layers.Dense(num_classes, activation="softmax", name=SOFTMAX_LAYER)


def facemask_baseline(num_classes: int, input_shape: tuple, weights: str | None = None) -> list:
    """Report 001's starting model: five blocks of one 3x3 convolution (8, 16, 32, 64, 128 filters, 'same'
    padding, ReLU) and a 2x2 max-pool; Flatten, Dense 512 ReLU, Dense 3 softmax. Adam 1e-4.

    Report 001: 4,294,739 parameters at 256x256x3 (Dense 512 alone: 8,192 x 512 + 512 = 4,194,816).
    """
    out: list = []
    for filters in (8, 16, 32, 64, 128):
        out += [layers.Conv2D(filters, 3, padding="same", activation="relu"), layers.MaxPooling2D(2)]
    return out + [layers.Flatten(), layers.Dense(512, activation="relu", name=FEATURE_LAYER),
                  _softmax(num_classes)]


def facemask_final(num_classes: int, input_shape: tuple, weights: str | None = None) -> list:
    """Report 001's final model: four blocks of 32/64/128/256 filters with 2/3/4/4 valid 3x3 convolutions; in
    each block BatchNormalization + ReLU after the first convolution (the others ReLU), then a 2x2 max-pool;
    Flatten, Dropout 0.5, Dense 512 ReLU, Dropout 0.2, Dense 3 softmax; L2 1e-4 ("weight decay") on the last
    convolution and the Dense 512. Adam 1e-4.

    Report 001: 13,305,315 parameters, 960 non-trainable (the BatchNorm moving statistics), at 256x256x3:
    254 -> 252 -> 126 | 124 -> 122 -> 120 -> 60 | 58 -> ... -> 52 -> 26 | 24 -> ... -> 18 -> 9; Flatten 20,736.
    Valid convolutions need at least 128x128 inputs (the Face Mask set's own size).
    """
    out: list = []
    blocks = ((32, 2), (64, 3), (128, 4), (256, 4))
    for b, (filters, convs) in enumerate(blocks, start=1):
        out += [layers.Conv2D(filters, 3, name=f"conv{b}_1"), layers.BatchNormalization(name=f"bn{b}"),
                layers.ReLU(name=f"relu{b}")]
        for c in range(2, convs + 1):
            last = b == len(blocks) and c == convs
            out.append(layers.Conv2D(filters, 3, activation="relu", name=f"conv{b}_{c}",
                                     kernel_regularizer=regularizers.L2(1e-4) if last else None))
        out.append(layers.MaxPooling2D(2, name=f"pool{b}"))
    return out + [
        layers.Flatten(), layers.Dropout(0.5),
        layers.Dense(512, activation="relu", kernel_regularizer=regularizers.L2(1e-4), name="dense_512"),
        layers.Dropout(0.2, name=FEATURE_LAYER), _softmax(num_classes),
    ]


def cows_horses(num_classes: int, input_shape: tuple, weights: str | None = None) -> list:
    """Report 003's classifier: conv 16 3x3 ReLU, max-pool 2; conv 32 2x2 ReLU, dropout 0.5, max-pool 2;
    conv 8 2x2 ReLU; Flatten; FC 800, dropout 0.15, ReLU; FC 200; dropout 0.5; FC 2 softmax. SGD lr 0.01,
    momentum 0.99, weight decay 0.05, batch 4, 20 epochs, 64x64 input.

    The report says the flattened vector has 1,352 values (13x13x8), but its own layer sizes give 14x14x8 =
    1,568 (64 -> 62 -> 31 -> 30 -> 15 -> 14): we follow the layers, so FC 800 has 1,568 x 800 + 800 weights and
    the model 1,419,362 parameters at 64x64. The report names no activation after FC 200; none is used.
    """
    return [
        layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(32, 2, activation="relu"), layers.Dropout(0.5), layers.MaxPooling2D(2),
        layers.Conv2D(8, 2, activation="relu"), layers.Flatten(name="flatten"),
        layers.Dense(800), layers.Dropout(0.15), layers.ReLU(),
        layers.Dense(200), layers.Dropout(0.5, name=FEATURE_LAYER), _softmax(num_classes),
    ]


def cifar_model1(num_classes: int, input_shape: tuple, weights: str | None = None) -> list:
    """Report 004's model 1, in its layer order: Conv2D, LeakyReLU, Conv2D, LeakyReLU, MaxPool, Dropout (twice),
    Flatten, Dense, LeakyReLU, Dropout, Dense, softmax. The report gives no sizes; we use the Keras CIFAR-10
    example this order matches: 3x3 convolutions of 32, 32 ('same', then valid) and 64, 64, dropouts 0.25,
    0.25 and 0.5, Dense 512; LeakyReLU with Keras' default slope 0.3."""
    out: list = []
    for filters in (32, 64):
        out += [layers.Conv2D(filters, 3, padding="same"), layers.LeakyReLU(), layers.Conv2D(filters, 3),
                layers.LeakyReLU(), layers.MaxPooling2D(2), layers.Dropout(0.25)]
    return out + [layers.Flatten(), layers.Dense(512), layers.LeakyReLU(),
                  layers.Dropout(0.5, name=FEATURE_LAYER), _softmax(num_classes)]


def cifar_model2(num_classes: int, input_shape: tuple, weights: str | None = None) -> list:
    """Report 004's model 2 (its best, 0.843): three blocks of Conv2D, Conv2D, MaxPool, Dropout; then
    BatchNormalization, Flatten, Dense, Dropout, Dense. Our sizes: 3x3 'same' ReLU convolutions of 32, 64 and
    128 filters, dropouts 0.2/0.3/0.4 and 0.5, Dense 128 ReLU."""
    out: list = []
    for filters, rate in ((32, 0.2), (64, 0.3), (128, 0.4)):
        out += [layers.Conv2D(filters, 3, padding="same", activation="relu"),
                layers.Conv2D(filters, 3, padding="same", activation="relu"),
                layers.MaxPooling2D(2), layers.Dropout(rate)]
    return out + [layers.BatchNormalization(), layers.Flatten(), layers.Dense(128, activation="relu"),
                  layers.Dropout(0.5, name=FEATURE_LAYER), _softmax(num_classes)]


def cifar_model3(num_classes: int, input_shape: tuple, weights: str | None = None) -> list:
    """Report 004's model 3: Conv2D, MaxPool, Conv2D, MaxPool, Flatten, then Dense + Dropout three times and
    the final Dense. Our sizes: valid 3x3 ReLU convolutions of 32 and 64 filters; Dense 256, 128, 64 (ReLU),
    each followed by dropout 0.3."""
    out: list = [layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
                 layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten()]
    for i, units in enumerate((256, 128, 64)):
        out += [layers.Dense(units, activation="relu"),
                layers.Dropout(0.3, name=FEATURE_LAYER if i == 2 else None)]
    return out + [_softmax(num_classes)]


def cifar_resnet50(num_classes: int, input_shape: tuple, weights: str | None = None) -> list:
    """Report 004's ResNet: ``keras.applications.ResNet50`` without top on 32x32 inputs (a 1x1x2048 output),
    Flatten, Dense 10 softmax; all layers trainable (fine-tuned). RMSprop, lr 1e-3 or 2e-5, 10 epochs, batch 32.

    Report 004: 23,608,202 parameters (23,587,712 + 20,490), 53,120 non-trainable.
    """
    base = application(keras.applications.ResNet50, weights, include_top=False, input_shape=tuple(input_shape))
    return [base, layers.Flatten(name=FEATURE_LAYER), _softmax(num_classes)]


def cifar_vgg16(num_classes: int, input_shape: tuple, weights: str | None = None) -> list:
    """Report 004's VGG16: ``keras.applications.VGG16`` without top on 32x32 inputs (1x1x512), Flatten, Dense 10
    softmax, fine-tuned. SGD lr 1e-3 momentum 0.9, 10 epochs, batch 32.

    Report 004: 14,719,818 parameters (14,714,688 + 5,130).
    """
    base = application(keras.applications.VGG16, weights, include_top=False, input_shape=tuple(input_shape))
    return [base, layers.Flatten(name=FEATURE_LAYER), _softmax(num_classes)]


BUILDERS: dict[str, Builder] = {
    "001-baseline": facemask_baseline,
    "001-final": facemask_final,
    "003-cows-horses": cows_horses,
    "004-model1": cifar_model1,
    "004-model2": cifar_model2,
    "004-model3": cifar_model3,
    "004-resnet50": cifar_resnet50,
    "004-vgg16": cifar_vgg16,
}
