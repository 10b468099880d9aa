"""Every page of the app renders without an exception, with an empty cache and with a finished experiment;
Classify is driven with real image bytes; Train shows jobs and cancels one."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.app import reference
from tests.conftest import HAS_FASHION
from tests.test_classify import jpeg_with_exif_rotation, png_rgba_transparent, tiny_experiment_cache

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = ["app_pages/overview.py", "app_pages/datasets.py", "app_pages/augmentation.py", "app_pages/architectures.py",
         "app_pages/train.py", "app_pages/results.py", "app_pages/classify.py"]
TIMEOUT = 120


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    if not HAS_FASHION:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return tiny_experiment_cache(tmp_path_factory.getbasetemp())


@pytest.fixture
def no_reference(tmp_path, monkeypatch) -> None:
    """Hide the shipped reference bundle, so a page shows only the cache under test."""
    monkeypatch.setattr(reference, "REFERENCE_DIR", tmp_path / "no_reference")


@pytest.fixture
def finished(tiny_cache, monkeypatch, no_reference) -> Path:
    monkeypatch.setenv("TWO_STAGE_CACHE", str(tiny_cache))
    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    return tiny_cache


@pytest.fixture
def empty(tmp_path, monkeypatch, no_reference) -> Path:
    path = tmp_path / "empty_cache"
    monkeypatch.setenv("TWO_STAGE_CACHE", str(path))
    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    return path


def test_a_fresh_clone_shows_the_shipped_run_and_classifies_with_it(tmp_path, monkeypatch):
    assert reference.bundles(), f"no reference bundle in {reference.REFERENCE_DIR}"
    monkeypatch.setenv("TWO_STAGE_CACHE", str(tmp_path / "fresh_cache"))
    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/results.py").run()
    assert_clean(at, "results")
    shown = " ".join(texts(at, "info") + texts(at, "caption"))
    dataset = at.selectbox[0].value  # the dataset the page opens on, and its shipped experiments' sizes
    counts = [len(runs) for runs in map(reference.load_runs, reference.bundles())
              if runs[0]["protocol"]["dataset"] == dataset]
    assert any(f"Ours: {n} repeats" in shown for n in counts) and "reference (shipped with the app)" in shown
    at.switch_page("app_pages/classify.py").run()
    assert_clean(at, "classify")
    assert at.file_uploader, "Classify should accept an upload with the shipped model, before any training"


def texts(at: AppTest, kind: str) -> list[str]:
    return [str(el.value) for el in getattr(at, kind)]


def assert_clean(at: AppTest, page: str) -> None:
    assert not at.exception, f"{page}: {[e.value for e in at.exception]}"
    problems = [t for t in texts(at, "error") if "Something went wrong" in t]
    assert not problems, f"{page}: {problems}"


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    if page != PAGES[0]:
        at.switch_page(page).run()
    return at


def test_every_page_with_an_empty_cache(empty):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert_clean(at, "overview")
    assert any("claim" in t for t in texts(at, "markdown"))
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert_clean(at, page)
        if page.endswith("results.py"):
            assert any("No finished runs yet" in t for t in texts(at, "info"))
        if page.endswith("classify.py"):
            assert any("No trained model yet" in t for t in texts(at, "info"))
            assert not at.file_uploader


def test_every_page_with_a_finished_experiment(finished):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert_clean(at, "overview")
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert_clean(at, page)
        if page.endswith("results.py"):
            md = " ".join(texts(at, "markdown"))
            assert "Table 1" in md and "Table 2" in md
            provenance = " ".join(texts(at, "info"))
            assert "2 repeats" in provenance and "fashion-mnist" in provenance and "tensorflow" in provenance
            assert len(at.download_button) == 4
        if page.endswith("classify.py"):
            assert at.selectbox[0].label == "Model" and len(at.selectbox[0].options) == 2
            assert at.file_uploader


def test_demo_mode_pages(finished, monkeypatch):
    monkeypatch.setenv("TWO_STAGE_DEMO", "1")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert any("Demo mode" in t for t in texts(at, "info")), "the sidebar's demo notice"
    for page in ("app_pages/train.py", "app_pages/classify.py", "app_pages/datasets.py"):
        at.switch_page(page).run()
        assert_clean(at, page)
        if page.endswith("train.py"):
            assert any("Demo mode" in t for t in texts(at, "caption"))
            assert at.number_input[0].max == 3  # repeats capped


@pytest.mark.parametrize("name,data,mime", [
    ("phone.jpg", jpeg_with_exif_rotation(), "image/jpeg"),
    ("transparent.png", png_rgba_transparent(), "image/png"),
])
def test_classify_real_images(finished, name, data, mime):
    at = open_page("app_pages/classify.py")
    at.file_uploader[0].set_value((name, data, mime)).run()
    assert_clean(at, name)
    assert not texts(at, "error")
    assert any(f"Predictions for *{name}*" in t for t in texts(at, "markdown"))
    labels = [m.label for m in at.metric]
    assert labels == ["Stage one (CNN)", "Stage two, Adam head", "Stage two, SGD head"]
    assert any("What the model saw" in c for img in at.image for c in img.captions)  # the preprocessed input


def test_classify_garbage_bytes_gives_a_clear_message(finished):
    at = open_page("app_pages/classify.py")
    at.file_uploader[0].set_value(("garbage.png", b"\x00\x01 definitely not an image", "image/png")).run()
    assert_clean(at, "garbage")
    errors = texts(at, "error")
    assert errors and "Could not use this file" in errors[0]
    assert not at.metric


def test_train_page_shows_a_cached_job_as_done_and_cancels_a_queued_one(finished):
    from core.protocol.config import Protocol
    from core.jobs.queue import JobQueue

    queue = JobQueue(finished)
    cached = queue.submit(Protocol(dataset="fashion-mnist", epochs=1, limit=200, test_limit=100), 2)
    assert queue.job(cached)["state"] == "done"  # everything stored: nothing trains
    queued = queue.submit(Protocol(dataset="fashion-mnist", epochs=2, limit=200, test_limit=100), 1)
    try:
        at = open_page("app_pages/train.py")
        assert_clean(at, "train")
        assert at.dataframe, "the queue table"
        cancel = [b for b in at.button if b.label == "Cancel this job"]
        assert cancel, "the queued job is watched and can be cancelled"
        cancel[0].click().run()
        assert_clean(at, "train after cancel")
        assert queue.job(queued)["state"] == "cancelled"
        at.selectbox(key="train_watch").set_value(cached).run()
        assert_clean(at, "train watching a done job")
        assert any("Done: 2 repeats" in t for t in texts(at, "success"))
    finally:
        queue.cancel(queued)
        queue.close()


def test_overview_lists_our_numbers_with_provenance(finished):
    at = open_page("app_pages/overview.py")
    captions = " ".join(texts(at, "caption"))
    assert "**Fashion-MNIST.**" in " ".join(texts(at, "markdown")) and "2 repeats" in captions
    assert any(b.label == "Start the quick run" for b in at.button)


def test_datasets_page_points_at_an_image_folder(empty, tmp_path):
    from tests.conftest import synthetic_images, write_class_folders

    images, labels = synthetic_images(6, 3)
    root = write_class_folders(tmp_path / "masks", images, labels, ["incorrect", "with_mask", "without_mask"])
    copied = sorted((root / "with_mask").iterdir())[0]
    (root / "with_mask" / "copy.png").write_bytes(copied.read_bytes())  # like the paper's own Face Mask set
    at = open_page("app_pages/datasets.py")
    at.text_input(key="data_path::face-mask").set_value(str(root)).run()
    assert_clean(at, "datasets with a folder")
    assert any(str(root) in t for t in texts(at, "success"))
    assert any(m.label == "test" for m in at.metric)
    warning = next(t for t in texts(at, "warning") if t.startswith("**Duplicates:**"))
    assert "1 file(s) are byte-identical copies of others (1 distinct images" in warning
    assert "random 20% test split, about 0.3 test images per repeat" in warning  # 2 * 0.2 * 0.8


def test_augmentation_regenerates_with_the_next_seed(empty):
    at = open_page("app_pages/augmentation.py")
    assert_clean(at, "augmentation")
    seed = at.number_input(key="aug_seed").value
    next(b for b in at.button if b.label.startswith("Regenerate")).click().run()
    assert_clean(at, "augmentation regenerated")
    assert at.number_input(key="aug_seed").value == seed + 1
    assert len(at.image) >= 13  # the original and 12 variants


def test_no_page_prints_a_stray_string():
    """Streamlit's "magic" writes any bare expression of a page script onto the page; only docstrings (the
    first statement of the module, a function or a class) are exempt. An attribute docstring after a
    constant once showed up above the Overview's title."""
    import ast

    root = Path(APP).parent
    for path in [root / "app.py", *sorted((root / "app_pages").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            body = getattr(node, "body", None)
            if not isinstance(body, list):
                continue
            documented = isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            for i, stmt in enumerate(body):
                bare = isinstance(stmt, ast.Expr) and isinstance(stmt.value, (ast.Constant, ast.JoinedStr))
                assert not bare or (i == 0 and documented), f"{path.name}:{stmt.lineno} would print on the page"



def test_each_datasets_folder_box_shows_its_own_folder_and_never_sends_you_to_the_page_you_are_on(empty):
    """The Face Mask and own-folder tabs showed "/data/dogs-vs-cats" and told the visitor to use "the Datasets
    page" while on it."""
    at = open_page("app_pages/datasets.py")
    assert_clean(at, "datasets")
    boxes = {box.key: box for box in at.text_input}
    assert boxes["data_path::face-mask"].placeholder.startswith("/data/face-mask-detection")
    assert boxes["data_path::folder"].placeholder.startswith("/data/my-images")
    assert boxes["data_path::dogs-cats"].placeholder.startswith("/data/cat-and-dog")
    assert len({b.placeholder for b in boxes.values()}) == len(boxes)
    shown = " ".join(texts(at, "warning") + [b.help or "" for b in boxes.values()])
    assert "Datasets page" not in shown and "data folder box" in shown
