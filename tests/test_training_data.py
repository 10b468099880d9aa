"""What stage one trains on (GAN images, frozen-backbone features), and the paper's second stage on the related
reports' models end to end."""

from __future__ import annotations

import numpy as np
import pytest

from core.models import backbones
from core.training import training_data
from core.protocol.config import Protocol
from core.data.datasets import load_dataset

from .conftest import synthetic_images, write_class_folders


@pytest.fixture
def tiny_folder(tmp_path):
    images, labels = synthetic_images(10, 2, size=32)
    return write_class_folders(tmp_path / "tiny", images, labels, ["cows", "horses"])


def test_the_papers_protocols_train_on_the_data_untouched(tiny_folder, tmp_path):
    data = load_dataset(Protocol(dataset="folder", data_path=str(tiny_folder), image_size=32))
    same, made = training_data.prepare(data, Protocol(dataset="folder", data_path=str(tiny_folder),
                                                      image_size=32), 0, tmp_path)
    assert same is data and made is None


def test_frozen_backbone_data_is_features_with_the_same_labels_and_ids(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(backbones, "INPUT_SIZE", 32)
    p = Protocol(dataset="folder", data_path=str(tiny_folder), image_size=32, architecture="002-resnet18")
    data = load_dataset(p)
    featured, made = training_data.prepare(data, p, 0, tmp_path / "artefacts" / p.key() / "0000")
    assert featured.x_train.shape == (len(data.y_train), 512) and featured.x_train.dtype == np.float32
    assert np.array_equal(featured.y_test, data.y_test) and np.array_equal(featured.ids["test"], data.ids["test"])
    assert made["backbone"]["cached"] == {"train": False, "val": False, "test": False}
    assert (tmp_path / "features").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("changes, bn_layers", [
    (dict(architecture="003-cows-horses", optimizer="sgd", learning_rate=0.01, momentum=0.99, weight_decay=0.05,
          batch_size=4, per_class=8, augment_preset="cows-horses", gan_images=2, gan_epochs=1), 0),
    (dict(architecture="004-model2", augment_preset="aug1"), 1),
])
def test_the_second_stage_runs_on_the_reports_models(tiny_folder, tmp_path, changes, bn_layers):
    from core.training.two_stage import run_repeat

    p = Protocol(dataset="folder", data_path=str(tiny_folder), image_size=32, epochs=1, **changes)
    record = run_repeat(load_dataset(p), p, 0, tmp_path / "work")
    assert record["stage1"]["batchnorm"]["layers"] == bn_layers
    for head in ("adam", "sgd"):
        assert 0.0 <= record[head]["last"]["test_accuracy"] <= 1.0
    assert record["features"]["dim"] > 0 and record["predictions"]["n"] == record["dataset"]["sizes"]["test"]
    assert record["protocol"]["architecture"] == changes["architecture"]
    if changes.get("gan_images"):
        assert record["training_data"]["synthetic"]["images"] == 4
        assert record["dataset"]["sizes"]["train"] + record["dataset"]["sizes"]["val"] == 16  # real images only
    assert (tmp_path / "work" / "stage1.keras").is_file()
