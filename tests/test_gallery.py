"""What the second stage changed, image by image, and the images behind a confusion-matrix cell."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.app import gallery
from core.results import predictions

RECORDS = Path(__file__).resolve().parent / "data" / "dogs_cats_records.json"


def one_hot(labels, classes=2, p=0.8):
    probs = np.full((len(labels), classes), (1 - p) / (classes - 1), np.float32)
    probs[np.arange(len(labels)), labels] = p
    return probs


def hand_run(repeat: int = 0) -> dict:
    """Four test images, truth 0 1 0 1. Stage one (last) says 1 1 0 0: wrong on images 0 and 3. The Adam head
    says 0 1 1 1: it fixes 0 and 3 and breaks 2. Re-estimating BatchNorm (last_bn) gives 0 1 0 0: it fixes
    image 0 alone. The best checkpoint says 1 1 0 1: it fixes image 3 alone."""
    y = np.array([0, 1, 0, 1])
    labels = {"stage1_last": [1, 1, 0, 0], "stage1_best": [1, 1, 0, 1], "stage1_last_bn": [0, 1, 0, 0],
              "stage1_best_bn": [0, 1, 0, 1], "adam": [0, 1, 1, 1], "sgd": [1, 1, 0, 0]}
    probs = {name: one_hot(np.array(v)) for name, v in labels.items()}
    block = predictions.encode(y, probs, "last", lambda rows: [f"img{int(r)}.png" for r in rows])
    return {"key": "k", "repeat": repeat, "predictions": block,
            "dataset": {"name": "dogs-cats", "class_names": ["cats", "dogs"]}}


def test_changes_are_fixed_broken_and_which_fix_alone_recovers_them():
    frame = gallery.changes([hand_run()], "adam").set_index("row")
    assert frame["outcome"].to_dict() == {0: "fixed", 2: "broken", 3: "fixed"}
    assert frame.loc[0, "BN alone"] and not frame.loc[3, "BN alone"]
    assert frame.loc[3, "best alone"] and not frame.loc[0, "best alone"]
    assert frame.loc[0, "id"] == "img0.png" and frame.loc[0, "stage one"] == "dogs"
    assert frame.loc[0, "p stage one"] == pytest.approx(0.8, abs=1e-3)  # stored as float16
    summary = gallery.change_summary([hand_run(0), hand_run(1)], "adam")
    assert (summary["fixed"], summary["broken"], summary["net"]) == (4, 2, 2)
    assert summary["gain"] == pytest.approx(2 / 8)  # +1 image of 4 per repeat: the head's accuracy gain
    assert (summary["fixed_by_bn"], summary["fixed_by_best"]) == (2, 2)


def test_the_net_change_is_exactly_the_heads_accuracy_gain_in_real_records():
    runs = json.loads(RECORDS.read_text())
    for head in ("adam", "sgd"):
        gain = np.mean([r[head]["last"]["test_accuracy"] - r["stage1"]["last"]["test_accuracy"] for r in runs])
        assert gallery.change_summary(runs, head)["gain"] == pytest.approx(gain, abs=1e-6)  # float32 accuracy


def test_a_cell_lists_its_images_most_confident_first_and_records_without_predictions_are_skipped():
    frame = gallery.cell_images([hand_run(), {"key": "old", "repeat": 1}], "stage1", 1, 0)  # dogs called cats
    assert list(frame["id"]) == ["img3.png"]
    assert frame["p predicted"].iloc[0] == pytest.approx(0.8, abs=1e-3)  # stored as float16
    assert gallery.cell_images([hand_run()], "stage1", 0, 0).empty  # correct answers keep no probabilities


def test_folder_images_are_read_only_inside_their_folder(tmp_path):
    (tmp_path / "data" / "cats").mkdir(parents=True)
    assert cv2.imwrite(str(tmp_path / "data" / "cats" / "a.png"), np.full((20, 30, 3), 90, np.uint8))
    assert cv2.imwrite(str(tmp_path / "secret.png"), np.zeros((5, 5, 3), np.uint8))
    img = gallery.image("dogs-cats", "cats/a.png", str(tmp_path / "data"))
    assert img.shape == (gallery.DISPLAY_SIZE, gallery.DISPLAY_SIZE, 3)
    assert gallery.image("dogs-cats", "../secret.png", str(tmp_path / "data")) is None
    assert gallery.image("dogs-cats", "cats/missing.png", str(tmp_path / "data")) is None
    assert gallery.image("fashion-mnist", "val #3", "/nowhere") is None  # not a name a record uses
    assert gallery.image("dogs-cats", "cats/a.png", None) is None


def test_where_the_images_are_is_read_from_the_record(tmp_path):
    run = {"dataset": {"name": "dogs-cats", "source": str(tmp_path)}, "protocol": {"data_path": "/gone"}}
    assert gallery.image_source(run) == str(tmp_path)
    run["dataset"]["source"] = "/also/gone"
    assert gallery.image_source(run) is None


def test_a_keras_dataset_image_comes_from_its_split_alone(tmp_path, monkeypatch):
    """Gallery images of Fashion-MNIST are read from the files; only the split asked for stays cached (the whole
    set held for a gallery once cost the server more than a page)."""
    from tests.test_datasets import _write_idx

    rng = np.random.default_rng(4)
    x_train, x_test = rng.integers(0, 255, (30, 28, 28)), rng.integers(0, 255, (20, 28, 28))
    for name, arr in (("train-images-idx3-ubyte", x_train), ("train-labels-idx1-ubyte", np.arange(30) % 10),
                      ("t10k-images-idx3-ubyte", x_test), ("t10k-labels-idx1-ubyte", np.arange(20) % 10)):
        _write_idx(tmp_path / name, arr, gz=True)
    gallery._keras_split.cache_clear()
    img = gallery.image("fashion-mnist", "test #7", str(tmp_path))
    np.testing.assert_array_equal(img[..., 0], x_test[7])
    assert gallery.image("fashion-mnist", "test #20", str(tmp_path)) is None  # past the end
    np.testing.assert_array_equal(gallery.image("fashion-mnist", "train #29", str(tmp_path))[..., 0], x_train[29])
    cached = gallery._keras_split("fashion-mnist", str(tmp_path), "test")
    assert cached.shape == (20, 28, 28, 1) and cached.base is None  # the split alone, not a view of the set
    gallery._keras_split.cache_clear()
