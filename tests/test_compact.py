"""core.models.compact: shipped stage-one models in float16 give the float32 model's answers, at half the size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.models import compact
from core.data.imageio import decode_image

PHOTOS = Path(__file__).resolve().parent / "data" / "photos"


def test_round_trip_gives_float32_weights_rounded_to_float16(tmp_path):
    import keras

    from core.models.models import build_stage1

    keras.utils.set_random_seed(0)
    model = build_stage1("fashion-mnist", (28, 28, 1), 10)
    path = compact.save(model, tmp_path / "stage1.npz")
    with np.load(path, allow_pickle=False) as stored:  # plain arrays: loading runs no code
        assert all(stored[n].dtype == np.float16 for n in stored.files if n.startswith("w"))
    back = compact.load(path)
    assert [layer.name for layer in back.layers] == [layer.name for layer in model.layers]
    for original, loaded in zip(model.get_weights(), back.get_weights()):
        assert loaded.dtype == np.float32
        np.testing.assert_array_equal(loaded, original.astype(np.float16).astype(np.float32))
    assert compact.load_model_file(path).count_params() == model.count_params()


def test_a_weight_beyond_float16_range_is_refused(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.set_weights([np.full((2, 1), 1e6, np.float32), np.zeros(1, np.float32)])
    with pytest.raises(ValueError, match="float16"):
        compact.save(model, tmp_path / "big.npz")


@pytest.mark.slow
def test_compact_dogs_cats_cnn_agrees_with_float32_on_at_least_99_5_percent(tmp_path):
    """The real Dogs & Cats architecture at its real input size (the 12.8M-weight dense layer that makes it
    52 MB), trained briefly (BatchNorm statistics re-estimated, so its answers depend on the image), on 300
    learnable synthetic images and the real photos in tests/data/photos."""
    import keras

    from core.models.models import build_stage1, reestimate_batchnorm
    from tests.conftest import synthetic_images

    keras.utils.set_random_seed(0)
    x, y = synthetic_images(48, 2, size=128, seed=1)
    model = build_stage1("dogs-cats", (128, 128, 3), 2)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    reestimate_batchnorm(model, x)
    x_test, _ = synthetic_images(150, 2, size=128, seed=2)
    photos = np.stack([decode_image(p.read_bytes(), size=128) for p in sorted(PHOTOS.glob("*.jpg"))])
    x_test = np.concatenate([x_test, photos])
    full = tmp_path / "stage1.keras"
    model.save(full)
    small = compact.load(compact.save(model, tmp_path / "stage1.npz"))
    p32 = model.predict(x_test, batch_size=64, verbose=0)
    p16 = small.predict(x_test, batch_size=64, verbose=0)
    assert len(set(np.argmax(p32, axis=1))) == 2, "the check is only meaningful if the model gives both answers"
    assert compact.agreement(p16, p32) >= compact.MIN_AGREEMENT
    assert np.abs(p16 - p32).max() < 0.02
    assert (tmp_path / "stage1.npz").stat().st_size < 0.5 * full.stat().st_size


def test_batchnorm_and_dropout_models_load_with_every_stored_weight(tmp_path):
    """The loader builds with zero initialisers and fills the weights one by one (to spare the server's memory):
    BatchNorm's moving statistics and every other weight must still come back as saved."""
    import keras

    from core.models.models import build_stage1

    keras.utils.set_random_seed(3)
    model = build_stage1("dogs-cats", (32, 32, 3), 2)
    x = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3)).astype(np.float32)
    for variable in model.non_trainable_weights:  # moving statistics unlike their initial values
        if variable.path.endswith(("moving_mean", "moving_variance")):
            variable.assign(np.full(tuple(variable.shape), 1.5 if variable.path.endswith("variance") else 0.5))
    back = compact.load(compact.save(model, tmp_path / "stage1.npz"))
    for original, loaded in zip(model.weights, back.weights):
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(original).astype(np.float16).astype(np.float32)
                                      if np.issubdtype(np.asarray(original).dtype, np.floating) else original)
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), atol=2e-2)


def test_a_weight_of_the_wrong_shape_is_one_line(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    path = compact.save(model, tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as stored:
        arrays = {n: stored[n] for n in stored.files}
    arrays["w0000"] = np.zeros((2, 4), np.float16)
    np.savez_compressed(path, **arrays)
    with pytest.raises(compact.UnloadableModel, match=r"^m\.npz cannot be loaded as a model \(m\.npz: weight w0000"):
        compact.load_model_file(path)
