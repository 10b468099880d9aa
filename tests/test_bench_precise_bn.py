"""bench.precise_bn's PreciseBN (fvcore's update_bn_stats in Keras): each BatchNorm layer ends with the plain
average of the training batches' statistics, and the layers' momenta are left as they were."""

from __future__ import annotations

import numpy as np

from bench.precise_bn import precise_bn


def _chain():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.BatchNormalization(),
                             keras.layers.Dropout(0.5), keras.layers.Dense(3), keras.layers.BatchNormalization()])


def test_the_first_layer_gets_the_average_of_its_batches_statistics():
    model = _chain()
    x = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
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


def test_training_mode_with_dropout_gives_other_statistics_downstream():
    """fvcore's way runs dropout too: the second BatchNorm then sees other activations than in BN-only mode."""
    x = np.random.default_rng(2).normal(size=(64, 6)).astype(np.float32)
    stats = []
    for bn_only in (True, False):
        model = _chain()
        precise_bn(model, x, iters=8, batch_size=16, bn_only=bn_only)
        stats.append(np.asarray(model.layers[4].moving_variance))
    assert not np.allclose(stats[0], stats[1])
