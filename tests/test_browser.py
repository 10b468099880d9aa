"""End to end in a real browser: start `streamlit run app.py`, go to Classify, upload a photo, see predictions."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import HAS_FASHION
from tests.test_classify import jpeg_with_exif_rotation, tiny_experiment_cache

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

try:
    import playwright.sync_api  # noqa: F401

    HAS_PLAYWRIGHT = True
except ImportError:
    HAS_PLAYWRIGHT = False

HAS_CHROMIUM = bool(Path(CHROMIUM).is_file() or shutil.which(CHROMIUM))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not HAS_PLAYWRIGHT, reason="the playwright package is not installed"),
    pytest.mark.skipif(not HAS_CHROMIUM, reason=f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"),
    pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST not installed (needed to train the tiny model)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(streamlit: list[str], env: dict[str, str], log_path: Path, timeout: float = 120):
    """``streamlit run app.py`` on a free local port until the block ends; yields ``(url, process)``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*streamlit, "run", "app.py", "--server.headless", "true", "--server.port",
                                 str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"streamlit did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.5)
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 900):
    """A page in headless Chromium, closed (with the browser) when the block ends."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def upload_photo(page, photo: Path) -> None:
    """On Classify: upload ``photo`` and wait until its predictions are on the page."""
    from playwright.sync_api import expect

    uploader = page.locator("[data-testid='stFileUploader'] input[type='file']")
    uploader.wait_for(state="attached", timeout=60_000)
    uploader.set_input_files(str(photo))
    expect(page.get_by_text("Predictions for")).to_be_visible(timeout=90_000)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """The real app served by `streamlit run`, over a cache holding a finished experiment."""
    cache = tiny_experiment_cache(tmp_path_factory.getbasetemp())
    env = {**os.environ, "TWO_STAGE_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TWO_STAGE_DEMO", None)
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    with running_app([sys.executable, "-m", "streamlit"], env, log, timeout=60) as (url, _proc):
        yield url


def test_classify_an_uploaded_photo_in_chromium(app_url, tmp_path):
    from playwright.sync_api import expect

    photo = tmp_path / "phone_photo.jpg"
    photo.write_bytes(jpeg_with_exif_rotation())
    with chromium_page(1400, 1200) as page:
        page.goto(app_url)
        expect(page.get_by_role("heading", name="Image classification by CNN with two-stage training")) \
            .to_be_visible(timeout=60_000)
        page.locator("[data-testid='stSidebarNav'] a", has_text="Classify").click()
        expect(page.get_by_role("heading", name="Classify")).to_be_visible(timeout=30_000)
        upload_photo(page, photo)
        metrics = page.locator("[data-testid='stMetric']")
        expect(metrics).to_have_count(3, timeout=30_000)
        for label in ("Stage one (CNN)", "Stage two, Adam head", "Stage two, SGD head"):
            expect(page.get_by_text(label, exact=True)).to_be_visible()
        expect(page.get_by_text("What the model saw")).to_be_visible()
        assert page.locator("[data-testid='stException']").count() == 0


def test_results_downloads_are_written_when_clicked(app_url, tmp_path):
    """The Results downloads are made on click (not on every visit, which held 12 MB per visitor): the file
    a click gives is the experiment's records."""
    import csv
    import io
    import json

    from playwright.sync_api import expect

    with chromium_page(1400, 1200) as page:
        page.goto(app_url)
        page.locator("[data-testid='stSidebarNav'] a", has_text="Results").click()
        button = page.get_by_role("button", name="Experiment (CSV)")
        expect(button).to_be_visible(timeout=60_000)
        with page.expect_download(timeout=60_000) as got:
            button.click()
        rows = list(csv.DictReader(io.StringIO(Path(got.value.path()).read_text())))
        assert rows and "repeat" in rows[0]
        with page.expect_download(timeout=60_000) as got:
            page.get_by_role("button", name="All runs (JSON)").click()
        records = json.loads(Path(got.value.path()).read_text())
        assert len(records) >= len(rows) and all("protocol" in r for r in records)
        assert page.locator("[data-testid='stException']").count() == 0


def test_a_page_opened_directly_on_a_fresh_server_gets_the_apps_navigation(tmp_path):
    """The first request of a new server process goes straight to /results (a shared link): the page must
    still be routed by app.py (its navigation titles, its page config), not by Streamlit's legacy mode."""
    from playwright.sync_api import expect

    env = {**os.environ, "TWO_STAGE_CACHE": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TWO_STAGE_DEMO", None)
    with running_app([sys.executable, "-m", "streamlit"], env, tmp_path / "streamlit.log", timeout=60) as (url, _):
        with chromium_page() as page:
            page.goto(f"{url}/results")
            expect(page.get_by_role("heading", name="Results")).to_be_visible(timeout=60_000)
            nav = page.locator("[data-testid='stSidebarNav']")
            for title in ("Overview", "Datasets", "Classify"):
                expect(nav.get_by_text(title, exact=True)).to_be_visible()
            assert nav.get_by_text("app", exact=True).count() == 0  # legacy mode would list the script
            assert page.title().startswith("Two-stage CNN training")  # app.py's page config applied
            assert page.locator("[data-testid='stException']").count() == 0


def test_classify_a_dog_photo_with_the_shipped_dogs_and_cats_model(tmp_path):
    """Classify with the shipped models: a real dog photo gets a Dogs & Cats answer and a heat map. Point
    $TWO_STAGE_REFERENCE at another folder of bundles to run it before reference/ ships one."""
    import re

    from playwright.sync_api import expect

    from core.app import reference

    assert reference.model_info(reference.REFERENCE_DIR / "dogs-cats"), \
        f"no Dogs & Cats bundle in {reference.REFERENCE_DIR}"
    photo = ROOT / "tests" / "data" / "photos" / "dog_1.jpg"
    env = {**os.environ, "TWO_STAGE_CACHE": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3",
           reference.REFERENCE_ENV: str(reference.REFERENCE_DIR)}
    env.pop("TWO_STAGE_DEMO", None)
    with running_app([sys.executable, "-m", "streamlit"], env, tmp_path / "streamlit.log", timeout=60) as (url, _):
        with chromium_page() as page:
            page.goto(f"{url}/classify")
            expect(page.get_by_role("heading", name="Classify")).to_be_visible(timeout=60_000)
            upload_photo(page, photo)
            model = page.get_by_role("combobox", name="Model")
            if "Dogs & Cats" not in model.input_value():  # the preselection follows the photo; make sure
                model.click()
                page.get_by_role("option").filter(has_text="Dogs & Cats").first.click()
            expect(model).to_have_value(re.compile("^Dogs & Cats"), timeout=30_000)
            stage_one = page.locator("[data-testid='stMetric']").first
            expect(stage_one.locator("[data-testid='stMetricValue']")).to_have_text(re.compile("^(cats|dogs)$"),
                                                                                    timeout=60_000)
            expect(page.get_by_text("Heat map (Grad-CAM) of stage one's answer")).to_be_visible(timeout=60_000)
            assert page.locator("[data-testid='stException']").count() == 0
