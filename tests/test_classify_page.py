"""The Classify page with shipped models that carry out-of-distribution statistics: the warning, the heat map,
the model preselected by the photo, the downloads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.app import reference
from tests.conftest import HAS_FASHION, synthetic_images, write_class_folders
from tests.test_classify import photo_bytes, png_bytes, trained_fashion_reference

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 180

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST not installed (needed to train the model)")]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    """A reference folder with two bundles: a trained Fashion-MNIST model, and a colour model of a class-folder
    dataset (synthetic quadrant images, 32x32), both with their statistics."""
    from core.protocol.config import Protocol
    from core.training.experiment import run_experiment
    from core.results.store import RunStore

    base = tmp_path_factory.mktemp("shipped")
    ref = base / "reference"
    shutil.copytree(trained_fashion_reference(tmp_path_factory.getbasetemp()) / "fashion-mnist", ref / "fashion-mnist")
    images, labels = synthetic_images(20, 3, size=40)
    folder = write_class_folders(base / "quadrants", images, labels, ["red", "green", "blue"])
    store = RunStore(base / "cache")
    protocol = Protocol(dataset="folder", data_path=str(folder), image_size=32, epochs=1)
    run_experiment(protocol, 1, store)
    reference.build_bundle(store, protocol.key(), ref)
    store.close()
    return ref


@pytest.fixture
def page(shipped, tmp_path, monkeypatch):
    monkeypatch.setattr(reference, "REFERENCE_DIR", shipped)
    monkeypatch.setenv("TWO_STAGE_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/classify.py").run()
    assert not at.exception
    return at


def chosen(at: AppTest) -> str:
    """The label of the model the selectbox shows."""
    box = at.selectbox(key="classify_model")
    return box.options[box.index]


def upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader[0].set_value((name, data, "image/png" if name.endswith(".png") else "image/jpeg")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def fashion_index(at: AppTest) -> int:
    box = at.selectbox(key="classify_model")
    return next(i for i, label in enumerate(box.options) if label.startswith("Fashion-MNIST"))


def warnings(at: AppTest) -> list[str]:
    return [str(w.value) for w in at.warning]


def test_a_colour_photo_on_the_fashion_model_warns_out_of_distribution_and_shows_a_heat_map(page, shipped):
    from core.classify.classify import classify, load_models

    info = reference.model_info(shipped / "fashion-mnist")
    fashion = load_models(info["paths"], info["class_names"], info["ood_path"])
    photos = photo_bytes()
    name = max(photos, key=lambda n: classify(fashion, photos[n]).ood.ratio)  # the clearest case
    upload(page, f"{name}.jpg", photos[name])
    page.selectbox(key="classify_model").set_value(fashion_index(page)).run()
    assert chosen(page).startswith("Fashion-MNIST")
    text = " ".join(warnings(page))
    assert "out-of-distribution" in text and "only knows 10 kinds of clothing" in text
    captions = [c for img in page.image for c in img.captions]
    assert any("What the model saw" in c for c in captions)
    assert any(c.startswith("Heat map (Grad-CAM) of stage one's answer") for c in captions)
    assert [m.label for m in page.metric] == ["Stage one (CNN)", "Stage two, Adam head", "Stage two, SGD head"]


def test_the_preselected_model_is_the_one_the_photo_fits(page):
    from core.data.datasets import load_raw

    quadrant = synthetic_images(1, 3, size=40, seed=7)[0][1]
    upload(page, "quadrant.png", png_bytes(quadrant))
    assert chosen(page).startswith("Your own folder") and not warnings(page)

    item = load_raw("fashion-mnist").x_test[0][..., 0]
    upload(page, "item.png", png_bytes(np.ascontiguousarray(item)))
    assert chosen(page).startswith("Fashion-MNIST")
    assert not warnings(page), "a Fashion-MNIST test image is within the model's range"
    assert any("Out-of-distribution check passed" in str(c.value) for c in page.caption)

    other = next(i for i, label in enumerate(page.selectbox(key="classify_model").options)
                 if label.startswith("Your own folder"))
    page.selectbox(key="classify_model").set_value(other).run()
    page.run()  # the visitor's own choice stands until the next photo
    assert chosen(page).startswith("Your own folder")


def test_a_damaged_statistics_file_leaves_the_model_answering_without_the_check(shipped, tmp_path, monkeypatch):
    ref = tmp_path / "reference"
    shutil.copytree(shipped, ref)
    stats = ref / "fashion-mnist" / "ood.npz"
    stats.write_bytes(stats.read_bytes()[:300])
    monkeypatch.setattr(reference, "REFERENCE_DIR", ref)
    monkeypatch.setenv("TWO_STAGE_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/classify.py").run()
    upload(at, "item.png", png_bytes(np.full((28, 28), 40, np.uint8)))
    at.selectbox(key="classify_model").set_value(fashion_index(at)).run()
    assert chosen(at).startswith("Fashion-MNIST") and not at.exception and not at.error
    assert any("Predictions for" in str(m.value) for m in at.markdown)
    assert any(str(c.value).startswith("No out-of-distribution check for this model: its statistics file ood.npz "
                                       "cannot be read") for c in at.caption), [c.value for c in at.caption]


def test_the_model_set_can_be_downloaded(page):
    labels = [b.label for b in page.get("download_button")]
    assert labels == ["Keras model (.keras)", "LiteRT model (.tflite)"]


@pytest.mark.parametrize("photo, title", [("face_without_mask", "Face Mask Detection v1"), ("cat_2", "Dogs & Cats")])
def test_the_shipped_model_chooser_preselects_the_photos_own_model(photo, title, tmp_path, monkeypatch):
    """With the shipped Dogs & Cats and Face Mask models the out-of-distribution check passes a face for the pet
    model too (the rank rule sent this face to the pet model, as it did ~20-30 % of faces: docs/pages.md, "Classify");
    the shipped model chooser picks the face model and says so under the Model box. Sure of its choice, it gets no
    "also within the range of ..." note: that note appeared on every accepted photo and so said nothing."""
    from core.app import catalog

    assert catalog.model_chooser(catalog.models()), "reference/ ships no model chooser for its models"
    monkeypatch.setenv("TWO_STAGE_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/classify.py").run()
    upload(at, f"{photo}.jpg", photo_bytes()[photo])
    assert chosen(at).startswith(title) and not warnings(at)
    said = next(str(c.value) for c in at.caption if str(c.value).startswith("Preselected by the model chooser"))
    assert said.startswith(f"Preselected by the model chooser ({title} ") and "held-out images" in said
    notes = [str(i.value) for i in at.info]
    assert not any(n.startswith("The photo is also within the range") for n in notes), notes
    passed = next(str(c.value) for c in at.caption if str(c.value).startswith("Out-of-distribution check passed"))
    assert "of them are further away" in passed and "further from the classes than" not in passed


def open_classify(tmp_path, monkeypatch) -> AppTest:
    monkeypatch.setenv("TWO_STAGE_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/classify.py").run()
    assert not at.exception
    return at


def test_a_sample_photo_is_one_click_and_an_unsure_chooser_says_so_with_the_other_models_answer(tmp_path,
                                                                                               monkeypatch):
    """The dog's face close-up went to the Face Mask model (chooser 68 %), which answered "without_mask" with no
    warning. It is one of the sample photos; the page now says the chooser is unsure and gives the Dogs & Cats
    model's answer beside it."""
    at = open_classify(tmp_path, monkeypatch)
    (row,) = at.get("button_group")
    assert len(row.proto.options) == 6
    row.set_value("dog_close_up.jpg").run()
    assert not at.exception
    assert any("Predictions for *a dog, close up*" in str(m.value) for m in at.markdown)
    unsure = [w for w in warnings(at) if "The model chooser is unsure" in w]
    assert unsure and "The **Dogs & Cats** model's answer: stage one **" in unsure[0], warnings(at)


def test_a_file_it_cannot_read_says_which_formats_it_takes_and_keeps_the_model_box_and_downloads(tmp_path,
                                                                                                monkeypatch):
    from core.data.imageio import FORMAT_NAMES

    at = open_classify(tmp_path, monkeypatch)
    assert FORMAT_NAMES in at.file_uploader[0].label
    upload(at, "notes.png", b"\x00\x01 not an image")
    assert any(FORMAT_NAMES in str(e.value) for e in at.error)
    assert at.selectbox(key="classify_model") is not None
    assert [b.label for b in at.get("download_button")] == ["Keras model (.keras)", "LiteRT model (.tflite)"]


def test_a_damaged_model_chooser_is_one_line_and_the_rank_rule_preselects(tmp_path, monkeypatch):
    from core.app import catalog
    from core.classify import router

    assert catalog.model_chooser(catalog.models()), "reference/ ships no model chooser for its models"
    ref = tmp_path / "reference"
    ref.mkdir()
    for bundle in reference.bundles():
        (ref / bundle.name).symlink_to(bundle, target_is_directory=True)
    (ref / router.FILE).write_bytes((reference.REFERENCE_DIR / router.FILE).read_bytes()[:300])
    monkeypatch.setattr(reference, "REFERENCE_DIR", ref)
    monkeypatch.setenv("TWO_STAGE_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/classify.py").run()
    upload(at, "dog_1.jpg", photo_bytes()["dog_1"])
    captions = [str(c.value) for c in at.caption]
    assert any(c.startswith("Preselecting without the model chooser: the model chooser router.npz cannot be read")
               for c in captions), captions
    assert not any(c.startswith("Preselected by the model chooser") for c in captions)
    assert at.markdown and any("Predictions for" in str(m.value) for m in at.markdown)
