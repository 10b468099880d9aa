"""What every stage-one architecture is, without building it: ids, sources, kinds and input requirements.

Kept free of Keras so that the protocol can validate an architecture id, and the CLI and pages can list them,
without importing a deep-learning library. The builders live in :mod:`core.models.models` (the paper's four),
:mod:`core.models.report_models` (reports 001, 003 and 004) and :mod:`core.models.backbones` (report 002's frozen ImageNet
backbones); :mod:`core.models.models` checks that every id here has exactly one builder.

The two layer names are where stage two cuts every one of these networks: the layer named
:data:`FEATURE_LAYER` is the last hidden layer (the input of the final softmax), :data:`SOFTMAX_LAYER` the
final softmax layer.
"""

from __future__ import annotations

from dataclasses import dataclass

FEATURE_LAYER = "features"
"""Name of the last hidden layer: its output is the input of the softmax layer, stage two's features."""
SOFTMAX_LAYER = "softmax"

KINDS = {
    "cnn": "trained from scratch",
    "pretrained": "an ImageNet backbone fine-tuned end to end with a new classifier",
    "frozen": "a frozen ImageNet backbone; stage one trains only the new final layer, on cached features",
}


@dataclass(frozen=True)
class ArchInfo:
    """One architecture as the registry lists it."""

    id: str
    title: str
    source: str
    """``"paper"`` or a related report's id (``"001"`` .. ``"004"``, see :mod:`core.studies.reports`)."""
    kind: str
    """A key of :data:`KINDS`."""
    input_shape: tuple[int, int, int]
    """The input its source uses (parameter counts are given at this shape)."""
    num_classes: int
    """The number of classes its source trains it for."""
    min_side: int
    """Smallest square input side the layers accept (valid convolutions and pools shrink it)."""
    channels: int | None = None
    """Required input channels (3 for ImageNet backbones); None accepts any."""

    @property
    def frozen(self) -> bool:
        return self.kind == "frozen"


def _info(*rows: tuple) -> dict[str, ArchInfo]:
    return {row[0]: ArchInfo(*row) for row in rows}


ARCH_INFO: dict[str, ArchInfo] = _info(
    ("fashion-mnist", "Fashion-MNIST CNN (Kadam et al. architecture 3)", "paper", "cnn", (28, 28, 1), 10, 10),
    ("cifar10", "CIFAR-10 CNN (Kaggle model 4)", "paper", "cnn", (32, 32, 3), 10, 8),
    ("dogs-cats", "Dogs & Cats CNN (uysimty's Kaggle model)", "paper", "cnn", (128, 128, 3), 2, 22),
    ("face-mask", "Face Mask CNN (Kaggle 'Mask Detection' model 2)", "paper", "cnn", (128, 128, 3), 3, 22),
    ("001-baseline", "Face-mask baseline: 5 conv blocks, Dense 512", "001", "cnn", (256, 256, 3), 3, 32),
    ("001-final", "Face-mask final: 4 VGG-like blocks with BatchNorm, dropout, L2", "001", "cnn",
     (256, 256, 3), 3, 128),
    ("002-vgg16", "VGG-16, frozen, new 10-way final layer", "002", "frozen", (32, 32, 3), 10, 8, 3),
    ("002-vgg19", "VGG-19, frozen, new 10-way final layer", "002", "frozen", (32, 32, 3), 10, 8, 3),
    ("002-resnet18", "ResNet-18, frozen, new 10-way final layer", "002", "frozen", (32, 32, 3), 10, 8, 3),
    ("002-resnet34", "ResNet-34, frozen, new 10-way final layer", "002", "frozen", (32, 32, 3), 10, 8, 3),
    ("002-resnet50", "ResNet-50, frozen, new 10-way final layer", "002", "frozen", (32, 32, 3), 10, 8, 3),
    ("003-cows-horses", "Cows-vs-horses CNN: 3 small convs, FC 800/200/2", "003", "cnn", (64, 64, 3), 2, 12),
    ("004-model1", "CIFAR-10 custom model 1 (conv pairs, LeakyReLU)", "004", "cnn", (32, 32, 3), 10, 10),
    ("004-model2", "CIFAR-10 custom model 2 (three conv pairs, BatchNorm)", "004", "cnn", (32, 32, 3), 10, 8),
    ("004-model3", "CIFAR-10 custom model 3 (two convs, four dense)", "004", "cnn", (32, 32, 3), 10, 10),
    ("004-resnet50", "ResNet-50 without top, Flatten + Dense 10", "004", "pretrained", (32, 32, 3), 10, 32, 3),
    ("004-vgg16", "VGG-16 without top, Flatten + Dense 10", "004", "pretrained", (32, 32, 3), 10, 32, 3),
)
"""Every architecture id, in the order the CLI and the pages list them."""

PAPER_IDS = tuple(i for i, info in ARCH_INFO.items() if info.source == "paper")


def info(architecture: str) -> ArchInfo:
    """The registry entry; a ValueError naming the valid ids for an unknown one."""
    try:
        return ARCH_INFO[architecture]
    except KeyError:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCH_INFO)}") from None
