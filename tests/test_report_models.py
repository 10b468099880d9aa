"""The related reports' models: their published parameter counts, their layer orders, and the cut stage two
makes in every one of them (the layer before the final softmax)."""

from __future__ import annotations

import numpy as np
import pytest

from core.protocol.arch_spec import ARCH_INFO, FEATURE_LAYER, SOFTMAX_LAYER
from core.models.models import build_stage1, feature_extractor, parameter_counts

CNNS = [a for a, info in ARCH_INFO.items() if info.kind == "cnn" and info.source != "paper"]


@pytest.mark.parametrize("architecture, total, non_trainable", [
    ("001-baseline", 4_294_739, 0),      # report 001's summary
    ("001-final", 13_305_315, 960),      # report 001's summary
    ("004-resnet50", 23_608_202, 53_120),  # report 004's figure 1
    ("004-vgg16", 14_719_818, 0),        # report 004's figure 1
])
def test_published_parameter_counts(architecture, total, non_trainable):
    info = ARCH_INFO[architecture]
    counts = parameter_counts(build_stage1(architecture, info.input_shape, info.num_classes))
    assert (counts["total"], counts["non_trainable"]) == (total, non_trainable)


def test_cows_horses_follows_its_layers_not_its_stated_flatten_size():
    """Report 003 says 1,352 flattened values; its layers give 14 x 14 x 8 = 1,568 at 64x64."""
    model = build_stage1("003-cows-horses", (64, 64, 3), 2)
    assert model.get_layer("flatten").output.shape[-1] == 1568
    assert parameter_counts(model)["total"] == 1_419_362
    dense = [layer.units for layer in model.layers if type(layer).__name__ == "Dense"]
    rates = [layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"]
    assert dense == [800, 200, 2] and rates == [0.5, 0.15, 0.5]


@pytest.mark.parametrize("architecture, order", [
    ("004-model1", "Conv2D LeakyReLU Conv2D LeakyReLU MaxPooling2D Dropout Conv2D LeakyReLU Conv2D LeakyReLU "
                   "MaxPooling2D Dropout Flatten Dense LeakyReLU Dropout Dense"),
    ("004-model2", "Conv2D Conv2D MaxPooling2D Dropout Conv2D Conv2D MaxPooling2D Dropout Conv2D Conv2D "
                   "MaxPooling2D Dropout BatchNormalization Flatten Dense Dropout Dense"),
    ("004-model3", "Conv2D MaxPooling2D Conv2D MaxPooling2D Flatten Dense Dropout Dense Dropout Dense Dropout "
                   "Dense"),
])
def test_report_004_custom_models_have_its_layer_orders(architecture, order):
    """The report lists each model's layers; its last Dense + Activation is one softmax Dense here."""
    model = build_stage1(architecture, (32, 32, 3), 10)
    kinds = [type(layer).__name__ for layer in model.layers[2:]]  # after the input and the rescaling
    assert kinds == order.split()


def test_report_001_final_regularises_only_its_last_convolution_and_dense_layer():
    model = build_stage1("001-final", (128, 128, 3), 3)
    regularised = [layer.name for layer in model.layers if getattr(layer, "kernel_regularizer", None)]
    assert regularised == ["conv4_4", "dense_512"]
    assert [layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"] == [0.5, 0.2]


@pytest.mark.parametrize("architecture", CNNS)
def test_stage_two_cuts_every_report_cnn_before_its_softmax(architecture):
    info = ARCH_INFO[architecture]
    side = max(info.min_side, 32) if architecture != "001-final" else 128
    model = build_stage1(architecture, (side, side, 3), 3)
    assert model.layers[-1].name == SOFTMAX_LAYER and model.layers[-2].name == FEATURE_LAYER
    x = np.random.default_rng(0).integers(0, 255, (2, side, side, 3), dtype=np.uint8)
    probs = np.asarray(model(x, training=False))
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    features = np.asarray(feature_extractor(model)(x, training=False))
    assert features.shape == (2, model.get_layer(SOFTMAX_LAYER).input.shape[-1])


def _usable(architecture: str, side: int) -> bool:
    """Whether the model builds at ``side`` with a non-empty feature map before its dense layers."""
    try:
        model = build_stage1(architecture, (side, side, 3), 2)
    except ValueError:
        return False
    flat = [layer for layer in model.layers if type(layer).__name__ == "Flatten"]
    return not flat or flat[0].output.shape[-1] > 0


@pytest.mark.parametrize("architecture", ["001-baseline", "001-final", "003-cows-horses", "004-model1",
                                          "004-model3"])
def test_min_side_is_the_smallest_input_the_layers_accept(architecture):
    """The protocol refuses smaller inputs up front (one line) instead of a Keras shape error mid-run."""
    side = ARCH_INFO[architecture].min_side
    assert _usable(architecture, side) and not _usable(architecture, side - 1)


def test_frozen_backbone_models_are_the_new_layer_on_features():
    model = build_stage1("002-vgg16", (4096,), 10)
    assert [layer.name for layer in model.layers[1:]] == [FEATURE_LAYER, SOFTMAX_LAYER]
    assert model.get_layer(FEATURE_LAYER).rate == 0.5  # torchvision's classifier dropout before the last layer
    assert parameter_counts(model)["total"] == 4096 * 10 + 10
    assert type(build_stage1("002-resnet18", (512,), 10).get_layer(FEATURE_LAYER)).__name__ == "Identity"


def test_weights_that_do_not_exist_are_one_clear_error(tmp_path):
    from core.models.backbones import WeightsUnavailable

    with pytest.raises(WeightsUnavailable, match="does not exist"):
        build_stage1("004-vgg16", (32, 32, 3), 10, weights=str(tmp_path / "missing.h5"))
