"""Report 002's frozen backbones: ResNet-18/34 as torchvision builds them, and features computed once."""

from __future__ import annotations

import numpy as np
import pytest

from core.models import backbones
from core.models.models import parameter_counts


@pytest.mark.parametrize("blocks, trainable", [((2, 2, 2, 2), 11_689_512), ((3, 4, 6, 3), 21_797_672)])
def test_resnet18_and_34_have_torchvisions_parameters(blocks, trainable):
    """torchvision counts weights and biases (its BatchNorm running statistics are buffers, not parameters)."""
    counts = parameter_counts(backbones.resnet(blocks, num_classes=1000))
    assert counts["trainable"] == trainable


def test_features_are_computed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(backbones, "INPUT_SIZE", 32)
    built = []
    real_build = backbones.build_backbone
    monkeypatch.setattr(backbones, "build_backbone", lambda *a: built.append(a) or real_build(*a))
    rng = np.random.default_rng(0)
    splits = {"train": rng.integers(0, 255, (6, 20, 20, 3), dtype=np.uint8),
              "test": rng.integers(0, 255, (4, 20, 20, 3), dtype=np.uint8)}
    events: list[dict] = []
    first = backbones.cached_features("002-resnet18", None, splits, tmp_path, events.append)
    assert len(built) == 1 and first["train"].shape == (6, 512)
    assert [e["cached"] for e in events] == [False, False]
    events.clear()
    second = backbones.cached_features("002-resnet18", None, splits, tmp_path, events.append)
    assert len(built) == 1, "the backbone must not be built again"
    assert [e["cached"] for e in events] == [True, True]
    assert all(np.array_equal(first[s], second[s]) for s in splits)
    other = {"train": splits["train"][:5]}  # other pixels are other features
    backbones.cached_features("002-resnet18", None, other, tmp_path)
    assert len(built) == 2


def test_feature_cache_is_shared_by_every_experiment_of_a_cache(tmp_path):
    assert backbones.feature_dir(tmp_path / "artefacts" / "abc" / "0000") == tmp_path / "features"
    assert backbones.feature_dir(tmp_path / "elsewhere") == tmp_path / "elsewhere" / "features"


def test_missing_weights_say_how_to_provide_them(tmp_path):
    with pytest.raises(backbones.WeightsUnavailable, match="no Keras download"):
        backbones.build_backbone("002-resnet18", "imagenet")
    with pytest.raises(backbones.WeightsUnavailable, match="does not exist"):
        backbones.build_backbone("002-vgg16", str(tmp_path / "vgg16.h5"))


def test_normalisation_is_the_weights_own():
    image = np.full((1, 8, 8, 3), [255, 0, 0], dtype=np.uint8)  # pure red
    caffe = backbones.preprocess(image, "caffe")[0, 0, 0]
    assert caffe.shape == (3,) and np.allclose(caffe, [0 - 103.939, 0 - 116.779, 255 - 123.68])  # BGR
    torch = backbones.preprocess(image, "torch")[0, 0, 0]
    assert np.allclose(torch, (np.array([1.0, 0.0, 0.0]) - backbones.TORCH_MEAN) / backbones.TORCH_STD)
