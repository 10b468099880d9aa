"""core.classify.export: the downloaded .keras and LiteRT .tflite files answer exactly as the model set in the app."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.classify import export
from core.classify.classify import load_models, predict_array
from core.data.imageio import decode_image
from tests.test_classify import save_model_set

PHOTOS = Path(__file__).resolve().parent / "data" / "photos"


@pytest.fixture(scope="module")
def model_set(tmp_path_factory):
    paths = save_model_set(tmp_path_factory.mktemp("export"), "fashion-mnist", (28, 28, 1), 10)
    return load_models(paths)


def images() -> np.ndarray:
    """Real photos as the model sees them, and random pixels."""
    photos = [decode_image(p.read_bytes(), size=28, grayscale=True) for p in sorted(PHOTOS.glob("*.jpg"))[:3]]
    noise = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    return np.concatenate([np.stack(photos), noise])


def app_answers(models, x: np.ndarray) -> list[np.ndarray]:
    rows = [predict_array(models, image) for image in x]
    return [np.stack([r[name] for r in rows]) for name in export.OUTPUTS]


def test_keras_file_gives_the_apps_three_answers(model_set, tmp_path):
    import keras

    path = tmp_path / "model.keras"
    path.write_bytes(export.keras_bytes(model_set))
    loaded = keras.saving.load_model(path, compile=False)
    assert [tuple(o.shape) for o in loaded.outputs] == [(None, 10)] * 3
    x = images()
    for got, want in zip(loaded.predict(x.astype(np.float32), verbose=0), app_answers(model_set, x)):
        np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.slow
def test_tflite_file_matches_the_keras_model_within_1e_5(model_set):
    data = export.tflite_bytes(model_set)
    assert data[4:8] == b"TFL3"  # the FlatBuffer identifier of a LiteRT/TFLite model
    x = images()
    got = export.tflite_predict(data, x.astype(np.float32))
    want = app_answers(model_set, x)
    assert not np.allclose(want[1], want[2])  # the heads differ, so a swapped output order would show
    for name, g, w in zip(export.OUTPUTS, got, want):
        assert g.shape == w.shape, name
        assert np.abs(g - w).max() <= 1e-5, f"{name}: {np.abs(g - w).max()}"


@pytest.mark.slow
def test_both_files_name_their_outputs_in_the_pages_order(model_set, tmp_path):
    """The .tflite listed its outputs as Adam, stage one, SGD while the page said stage one, Adam, SGD: both
    files now name them, and by name they come in the page's order."""
    import warnings

    import keras
    import tensorflow as tf

    path = tmp_path / "model.keras"
    path.write_bytes(export.keras_bytes(model_set))
    assert keras.saving.load_model(path, compile=False).output_names == ["stage_one", "stage_two_adam",
                                                                         "stage_two_sgd"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=export.tflite_bytes(model_set))
    (signature,) = interpreter.get_signature_list().values()
    assert signature["outputs"] == ["stage_one", "stage_two_adam", "stage_two_sgd"]
