import numpy as np
import pytest

from core.config import Augmentation
from core.models import (ARCHITECTURES, FEATURE_LAYER, SOFTMAX_LAYER, build_head, build_stage1,
                         feature_extractor, layer_table)

SHAPES = {"fashion-mnist": (28, 28, 1), "cifar10": (32, 32, 3), "dogs-cats": (128, 128, 3),
          "face-mask": (128, 128, 3)}
FEATURE_DIMS = {"fashion-mnist": 64, "cifar10": 128, "dogs-cats": 512, "face-mask": 128}
# Layer counts the paper gives in section 4 (conv, max-pool, batch-norm, dropout, dense).
COUNTS = {"fashion-mnist": (3, 2, 0, 3, 2), "cifar10": (6, 3, 7, 4, 2), "dogs-cats": (3, 3, 4, 4, 2),
          "face-mask": (3, 3, 1, 3, 2)}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_each_model_matches_the_papers_description(name):
    classes = {"dogs-cats": 2, "face-mask": 3}.get(name, 10)
    model = build_stage1(name, SHAPES[name], classes)
    x = np.random.default_rng(0).integers(0, 255, (2, *SHAPES[name]), dtype=np.uint8)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (2, classes) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    kinds = [type(layer).__name__ for layer in model.layers]
    counted = tuple(kinds.count(k) for k in ("Conv2D", "MaxPooling2D", "BatchNormalization", "Dropout", "Dense"))
    assert counted == COUNTS[name]
    features = feature_extractor(model)(x, training=False)
    assert features.shape == (2, FEATURE_DIMS[name])
    assert model.get_layer(SOFTMAX_LAYER).input.shape[-1] == FEATURE_DIMS[name]
    assert model.layers[-2].name == FEATURE_LAYER


def test_augmentation_only_acts_in_training():
    model = build_stage1("fashion-mnist", (28, 28, 1), 10, Augmentation(), seed=1)
    assert [layer.name for layer in model.layers[1:5]] == ["aug_rotation", "aug_zoom", "aug_shift", "aug_flip"]
    x = np.random.default_rng(0).integers(0, 255, (4, 28, 28, 1), dtype=np.uint8)
    plain = build_stage1("fashion-mnist", (28, 28, 1), 10)
    plain.set_weights(model.get_weights())
    assert np.allclose(model(x, training=False), plain(x, training=False), atol=1e-6)


def test_head_is_one_softmax_layer_and_can_be_warm_started():
    model = build_stage1("fashion-mnist", (28, 28, 1), 10)
    fresh, warm = build_head(64, 10), build_head(64, 10, warm_from=model)
    assert len(fresh.layers) == 2 and fresh.count_params() == 64 * 10 + 10
    for a, b in zip(warm.get_weights(), model.get_layer(SOFTMAX_LAYER).get_weights()):
        assert np.array_equal(a, b)


def test_layer_table_lists_shapes_and_parameters():
    rows = layer_table(build_stage1("fashion-mnist", (28, 28, 1), 10))
    assert rows[-1] == {"name": "softmax", "type": "Dense", "output shape": "(None, 10)", "parameters": 650}
    assert sum(r["parameters"] for r in rows) == build_stage1("fashion-mnist", (28, 28, 1), 10).count_params()
