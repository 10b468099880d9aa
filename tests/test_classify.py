"""core.classify: real image bytes of every awkward kind through the real decode function and saved models."""

from __future__ import annotations

import io
import struct
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from core.classify import Prediction, classify, guess_class_names, load_models, should_invert
from core.imageio import ImageError, decode_image
from tests.conftest import HAS_FASHION

_TINY: dict[str, Path] = {}


def tiny_experiment_cache(base: Path) -> Path:
    """A cache holding one real, finished two-repeat Fashion-MNIST experiment (~15 s, made once per session
    and shared by the page, classify and browser tests)."""
    if "cache" not in _TINY:
        from core.config import Protocol
        from core.experiment import run_experiment
        from core.store import RunStore

        root = Path(tempfile.mkdtemp(prefix="tiny_experiment_", dir=base)) / "cache"
        store = RunStore(root)
        run_experiment(Protocol(dataset="fashion-mnist", epochs=1, limit=200, test_limit=100), 2, store)
        store.close()
        _TINY["cache"] = root
    return _TINY["cache"]


# ------------------------------------------------------------------------------------------ image bytes

def jpeg_with_exif_rotation() -> bytes:
    """A 64x40 landscape JPEG, white on top and black below, stored with EXIF orientation 6 (the camera was
    turned 90° clockwise): shown upright it is portrait with the white half on the right."""
    img = np.zeros((40, 64, 3), np.uint8)
    img[:20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def png_rgba_transparent() -> bytes:
    """Black pixels, fully transparent: composited on white they must come out white, not black."""
    img = np.zeros((50, 50, 4), np.uint8)
    img[10:40, 10:40, 3] = 255  # an opaque black square in the middle
    buf = io.BytesIO()
    Image.fromarray(img, mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()


def png_16bit_gray() -> bytes:
    img = np.full((30, 30), 65535, np.uint16)
    img[10:20, 10:20] = 0
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (with a valid CRC) but holds almost no data."""
    ok, buf = cv2.imencode(".png", np.zeros((4, 4), np.uint8))
    data = bytearray(buf.tobytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def png_bytes(img: np.ndarray) -> bytes:
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    ok, buf = cv2.imencode(".png", bgr)
    assert ok
    return buf.tobytes()


# --------------------------------------------------------------------------------------------- models

def save_model_set(folder: Path, architecture: str, input_shape, num_classes: int) -> dict[str, Path]:
    """Untrained but real stage-one model + both heads, saved like a finished repeat saves them."""
    import keras

    from core.models import FEATURE_LAYER, build_head, build_stage1

    keras.utils.set_random_seed(0)
    model = build_stage1(architecture, input_shape, num_classes)
    dim = int(model.get_layer(FEATURE_LAYER).output.shape[-1])
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"stage1": folder / "stage1.keras", "adam": folder / "head_adam.keras",
             "sgd": folder / "head_sgd.keras"}
    model.save(paths["stage1"])
    build_head(dim, num_classes).save(paths["adam"])
    build_head(dim, num_classes).save(paths["sgd"])
    return paths


@pytest.fixture(scope="module")
def gray_models(tmp_path_factory):
    paths = save_model_set(tmp_path_factory.mktemp("gray"), "fashion-mnist", (28, 28, 1), 10)
    return load_models(paths)


@pytest.fixture(scope="module")
def color_models(tmp_path_factory):
    paths = save_model_set(tmp_path_factory.mktemp("color"), "cifar10", (32, 32, 3), 10)
    return load_models(paths, class_names=[f"c{i}" for i in range(10)])


def check_prediction(pred: Prediction, shape) -> None:
    assert pred.image.dtype == np.uint8 and pred.image.shape == tuple(shape)
    assert set(pred.probabilities) == {"stage1", "adam", "sgd"}
    for probs in pred.probabilities.values():
        assert probs.shape == (len(pred.class_names),)
        assert abs(float(probs.sum()) - 1.0) < 1e-4


# ---------------------------------------------------------------------------------------------- tests

def test_load_models_reads_shapes_and_guesses_names(gray_models, color_models):
    assert gray_models.input_shape == (28, 28, 1) and gray_models.channels == 1
    assert gray_models.class_names[0] == "T-shirt/top"  # guessed from the Fashion-MNIST shape
    assert color_models.class_names[3] == "c3"
    assert guess_class_names(3, (128, 128, 3)) == ["class 0", "class 1", "class 2"]


def test_load_models_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_models({"stage1": tmp_path / "nope.keras"})


def test_exif_rotated_jpeg_is_upright(color_models):
    pred = classify(color_models, jpeg_with_exif_rotation())
    check_prediction(pred, (32, 32, 3))
    gray = pred.image.mean(axis=-1)
    assert gray[:, 20:].mean() > 200 and gray[:, :12].mean() < 60  # white half now on the right


def test_png_alpha_composited_on_white(color_models):
    pred = classify(color_models, png_rgba_transparent())
    check_prediction(pred, (32, 32, 3))
    assert pred.image[0, 0].min() > 250  # transparent border -> white
    assert pred.image[16, 16].max() < 5  # opaque black centre stays black


def test_grayscale_and_16bit_inputs(color_models, gray_models):
    check_prediction(classify(color_models, png_16bit_gray()), (32, 32, 3))
    check_prediction(classify(gray_models, png_16bit_gray()), (28, 28, 1))
    rgb = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    check_prediction(classify(gray_models, png_bytes(rgb)), (28, 28, 1))


@pytest.mark.parametrize("data", [b"", b"garbage bytes, not an image", b"\x89PNG\r\n\x1a\n truncated",
                                  b"%PDF-1.4 fake pdf"])
def test_unusable_bytes_give_a_clear_message(color_models, data):
    with pytest.raises(ImageError) as info:
        classify(color_models, data)
    assert str(info.value)  # a message meant for the user


def test_huge_declared_dimensions_refused_from_header(color_models):
    data = png_declaring(100_000, 100_000)
    with pytest.raises(ImageError, match="declares|too large"):
        classify(color_models, data, max_pixels=16_000_000)


def test_invert_auto_and_explicit(gray_models):
    dark_on_light = np.full((60, 60, 3), 240, np.uint8)
    dark_on_light[15:45, 15:45] = 20
    pred = classify(gray_models, png_bytes(dark_on_light))
    assert pred.inverted and pred.image[14, 14, 0] > 200  # the item is now light, the border dark
    assert pred.image[0, 0, 0] < 40
    assert not classify(gray_models, png_bytes(dark_on_light), invert=False).inverted
    light_on_dark = 255 - dark_on_light
    assert not classify(gray_models, png_bytes(light_on_dark)).inverted
    assert should_invert(dark_on_light) and not should_invert(light_on_dark)


def test_color_models_never_invert(color_models):
    img = np.full((40, 40, 3), 250, np.uint8)
    assert not classify(color_models, png_bytes(img), invert=True).inverted


def test_preprocessing_matches_the_dataset_path(color_models):
    """The upload path is exactly decode_image (what the folder loaders use) + the model's own rescaling."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)
    data = png_bytes(img)
    pred = classify(color_models, data)
    np.testing.assert_array_equal(pred.image, decode_image(data, size=32))
    expected = color_models.stage1.predict(pred.image[None], verbose=0)[0]
    np.testing.assert_allclose(pred.probabilities["stage1"], expected, atol=1e-5)


@pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_real_trained_models_from_a_finished_experiment(tmp_path_factory):
    from core import catalog
    from core.datasets import load_raw
    from core.store import RunStore

    cache = tiny_experiment_cache(tmp_path_factory.getbasetemp())
    choices = catalog.models(RunStore(cache))
    assert choices, "the finished experiment kept its models"
    models = load_models(choices[0].paths, choices[0].class_names)
    raw = load_raw("fashion-mnist")
    sample = raw.x_test[0][..., 0]
    pred = classify(models, png_bytes(sample), invert=False)
    check_prediction(pred, (28, 28, 1))
    np.testing.assert_array_equal(pred.image[..., 0], sample)  # a 28x28 gray PNG reaches the model unchanged
