import numpy as np
import pytest

from core.protocol.config import Augmentation
from core.models.models import (ARCHITECTURES, FEATURE_LAYER, SOFTMAX_LAYER, build_head, build_stage1,
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


def _bn_chain():
    """x -> Dense(identity, no bias) -> BN -> Dense(doubling, bias 1) -> BN: each BN sees a known input."""
    import keras
    from keras import layers

    inputs = keras.Input((3,))
    x = layers.Dense(3, use_bias=False, kernel_initializer="identity", name="copy")(inputs)
    first = layers.BatchNormalization(name="bn1")
    x = first(x)
    x = layers.Dense(3, kernel_initializer=keras.initializers.Identity(2.0), bias_initializer="ones",
                     name="double")(x)
    second = layers.BatchNormalization(name="bn2")
    return keras.Model(inputs, second(x)), first, second


def test_batchnorm_reestimation_gives_each_layer_its_inputs_mean_and_variance():
    from core.models.models import reestimate_batchnorm

    model, first, second = _bn_chain()
    for bn in (first, second):  # moving statistics that lag far behind, as after a few training steps
        bn.moving_mean.assign([100.0, -5.0, 3.0])
        bn.moving_variance.assign([9.0, 9.0, 9.0])
    x = np.random.default_rng(0).normal([1.0, 2.0, 3.0], [0.5, 2.0, 1.0], (500, 3)).astype("float32")
    weights_before = [w.copy() for w in model.get_weights()]
    assert reestimate_batchnorm(model, x, batch_size=64) == 2
    assert np.allclose(first.moving_mean.numpy(), x.mean(axis=0), atol=1e-5)
    assert np.allclose(first.moving_variance.numpy(), x.var(axis=0), atol=1e-4)
    # bn2's input is 2 * bn1(x) + 1 with bn1 already corrected: mean 1, variance 4 * var/(var + eps)
    eps = first.epsilon
    assert np.allclose(second.moving_mean.numpy(), 1.0, atol=1e-4)
    assert np.allclose(second.moving_variance.numpy(), 4 * x.var(axis=0) / (x.var(axis=0) + eps), atol=1e-3)
    # only the moving statistics changed: kernels, biases, gamma and beta are untouched
    after = model.get_weights()
    moving = {id(v) for bn in (first, second) for v in (bn.moving_mean, bn.moving_variance)}
    for var, old, new in zip(model.weights, weights_before, after):
        if id(var) not in moving:
            assert np.array_equal(old, new), var.path


def test_batchnorm_reestimation_leaves_a_model_without_batchnorm_unchanged():
    from core.models.models import reestimate_batchnorm

    model = build_stage1("fashion-mnist", (28, 28, 1), 10)
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).integers(0, 255, (40, 28, 28, 1), dtype=np.uint8)
    assert reestimate_batchnorm(model, x) == 0
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_bfloat16_builds_mixed_layers_with_a_float32_softmax_and_leaves_the_global_policy_alone():
    import keras

    model = build_stage1("face-mask", (32, 32, 3), 3, precision="bfloat16")
    assert model.get_layer(SOFTMAX_LAYER).compute_dtype == "float32"
    assert model.get_layer(FEATURE_LAYER).compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    assert keras.config.dtype_policy().name == "float32"
    x = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    probs = keras.ops.convert_to_numpy(model(x, training=False))
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1, atol=1e-3)


def test_every_architecture_id_has_a_builder_and_the_paper_four_are_unchanged():
    from core.protocol.arch_spec import ARCH_INFO, PAPER_IDS
    from core.models.models import REGISTRY

    assert set(REGISTRY) == set(ARCH_INFO)
    assert PAPER_IDS == tuple(ARCHITECTURES)


def test_a_protocols_preset_builds_its_layers_and_fits_zca_on_the_training_split_only():
    from core.data.augment import ZCAWhitening
    from core.protocol.config import Protocol
    from core.models.models import build_for_protocol

    p = Protocol(dataset="cifar10", architecture="004-model3", augment_preset="aug1")
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
    model = build_for_protocol(p, (32, 32, 3), 10, seed=0, x_train=x_train)
    names = [layer.name for layer in model.layers]
    assert names[1:5] == ["aug_rotation", "aug_zoom", "aug_shift", "rescale"] and names[5] == "zca"
    zca = model.get_layer("zca")
    assert isinstance(zca, ZCAWhitening)
    per_channel = (x_train / 255.0).reshape(-1, 3).mean(axis=0)
    assert np.allclose(zca.mean.numpy(), per_channel, atol=1e-5)
    plain = build_for_protocol(p.with_(augment_preset="aug2"), (32, 32, 3), 10, seed=0)
    assert [layer.name for layer in plain.layers][1:4] == ["aug_zoom", "aug_shift", "aug_flip"]
    assert plain.get_layer("aug_flip").mode == "horizontal_and_vertical"


def test_batchnorm_reestimation_reaches_into_a_nested_backbone():
    """Report 004's ResNet50 is one nested layer of the stage-one chain; its BatchNorm layers count and are
    re-estimated in order, exactly as top-level ones."""
    import keras
    from keras import layers

    from core.models.models import batchnorm_layers, reestimate_batchnorm

    inner, first, second = _bn_chain()
    inputs = keras.Input((3,))
    x = layers.Rescaling(1.0, name="rescale")(inputs)
    outer = keras.Model(inputs, layers.Dense(2, name="head")(inner(x)))
    assert batchnorm_layers(outer) == [first, second]
    x_data = np.random.default_rng(3).normal([1.0, -2.0, 0.5], [1.0, 0.5, 2.0], (300, 3)).astype("float32")
    assert reestimate_batchnorm(outer, x_data, batch_size=64) == 2
    assert np.allclose(first.moving_mean.numpy(), x_data.mean(axis=0), atol=1e-5)
    assert np.allclose(first.moving_variance.numpy(), x_data.var(axis=0), atol=1e-4)
    assert np.allclose(second.moving_mean.numpy(), 1.0, atol=1e-4)


@pytest.mark.parametrize("architecture, shape, classes", [
    ("cifar10", (32, 32, 3), 10), ("dogs-cats", (32, 32, 3), 2), ("face-mask", (32, 32, 3), 3),
    ("001-final", (128, 128, 3), 3), ("004-model2", (32, 32, 3), 10), ("004-resnet50", (32, 32, 3), 10)])
def test_bn_momentum_reaches_every_batchnorm_layer_of_every_architecture_that_has_them(architecture, shape, classes):
    """--bn-momentum: every BatchNormalization layer of stage one, nested backbones' included (report 004's
    ResNet50 has 53), trains with the protocol's momentum, and the saved model says so."""
    from core.models.models import batchnorm_layers, build_for_protocol
    from core.protocol.config import Protocol

    dataset = {(32, 32, 3): "cifar10"}.get(shape, "folder") if architecture not in ("dogs-cats", "face-mask") \
        else architecture
    protocol = Protocol(dataset=dataset, data_path="/x" if dataset != "cifar10" else None, image_size=shape[0],
                        architecture=architecture, bn_momentum=0.9, augment=False)
    model = build_for_protocol(protocol, shape, classes, seed=0)
    found = batchnorm_layers(model)
    assert found and {layer.momentum for layer in found} == {0.9}
    assert all(layer.get_config()["momentum"] == 0.9 for layer in found)
    default = build_for_protocol(protocol.with_(bn_momentum=0.99), shape, classes, seed=0)
    assert {layer.momentum for layer in batchnorm_layers(default)} == {0.99}


def test_no_dropout_sets_every_dropout_rate_to_zero_and_keeps_the_layers():
    """--no-dropout, the intervention on dropout's variance shift: every Dropout layer of stage one stays (the
    feature layer is one) with rate 0, so training-mode dropout passes its input through unchanged."""
    import keras

    from core.models.models import FEATURE_LAYER, build_for_protocol
    from core.protocol.config import Protocol

    protocol = Protocol(dataset="dogs-cats", data_path="/x", image_size=32, augment=False)
    rates = lambda m: [layer.rate for layer in m.layers if isinstance(layer, keras.layers.Dropout)]  # noqa: E731
    assert rates(build_for_protocol(protocol, (32, 32, 3), 2, seed=0)) == [0.25, 0.25, 0.25, 0.5]
    model = build_for_protocol(protocol.with_(no_dropout=True), (32, 32, 3), 2, seed=0)
    assert rates(model) == [0.0, 0.0, 0.0, 0.0]
    features = model.get_layer(FEATURE_LAYER)
    x = np.ones((4, 8), "float32")
    assert np.array_equal(keras.ops.convert_to_numpy(features(x, training=True)), x)


# ------------------------------------------------------------------ PreciseBN (fvcore's update_bn_stats)

def _dense_bn_chain():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.BatchNormalization(),
                             keras.layers.Dropout(0.5), keras.layers.Dense(3), keras.layers.BatchNormalization()])


def test_precise_bn_gives_the_first_layer_the_average_of_its_batches_statistics():
    model = _dense_bn_chain()
    x = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
    from core.models.models import precise_bn

    precise_bn(model, x, iters=6, batch_size=8, bn_only=True, seed=3)
    # The same batches, drawn as precise_bn draws them: the first BatchNorm's input is the first Dense's output.
    rng = np.random.default_rng(3)
    order = np.concatenate([rng.permutation(40) for _ in range(6 * 8 // 40 + 1)])
    dense = model.layers[0]
    batches = [np.asarray(dense(x[order[i * 8:(i + 1) * 8]])) for i in range(6)]
    bn = model.layers[1]
    np.testing.assert_allclose(np.asarray(bn.moving_mean), np.mean([b.mean(axis=0) for b in batches], axis=0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), np.mean([b.var(axis=0) for b in batches], axis=0),
                               rtol=1e-4, atol=1e-5)
    assert [layer.momentum for layer in (model.layers[1], model.layers[4])] == [0.99, 0.99]


def test_precise_bn_in_training_mode_with_dropout_gives_other_statistics_downstream():
    """fvcore's way runs dropout too: the second BatchNorm then sees other activations than in BN-only mode."""
    x = np.random.default_rng(2).normal(size=(64, 6)).astype(np.float32)
    from core.models.models import precise_bn

    stats = []
    for bn_only in (True, False):
        model = _dense_bn_chain()
        precise_bn(model, x, iters=8, batch_size=16, bn_only=bn_only, seed=5)
        stats.append(np.asarray(model.layers[4].moving_variance))
    assert not np.allclose(stats[0], stats[1])
