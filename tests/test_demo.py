"""The hosted demo as a visitor meets it: a fresh virtual environment built from requirements.txt alone,
`streamlit run app.py` in demo mode over an empty cache, every page loaded in headless Chromium, a photo
classified with the shipped reference model, and the server's memory measured while doing it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.test_browser import CHROMIUM, HAS_CHROMIUM, HAS_PLAYWRIGHT, chromium_page, running_app, upload_photo
from tests.test_classify import jpeg_with_exif_rotation

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["Overview", "Datasets", "Augmentation", "Architectures", "Train", "Results", "Why", "Classify",
         "Related reports"]
HEADINGS = {"Overview": "Image classification by CNN with two-stage training", "Why": "Why does the second stage help?",
            "Related reports": "The four related reports"}  # where a page's title differs from its nav entry
MEMORY_LIMIT = 1152 * 2**20
"""A guard against a regression (a page that keeps a whole dataset, or every model twice, in memory), set above
the target so that the test never flakes: the demo host's budget is 1 GiB, and the server's peak while doing
what this test does was 991-1,010 MiB in three runs on 2026-12-07 (1,182-1,185 MiB before that day's changes).
Most of the margin that matters is elsewhere: about 420 MiB of that peak is library code a limited host drops,
and ``python -m bench.demo_memory`` shows the visit served inside a 690 MiB limit (docs/reference.md, the hosted
demo). The peak is printed."""

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not HAS_PLAYWRIGHT, reason="the playwright package is not installed"),
    pytest.mark.skipif(not HAS_CHROMIUM, reason=f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"),
]


def _fresh_venv(base: Path) -> Path:
    """A virtual environment with nothing but requirements.txt (``DEMO_VENV`` reuses one you built)."""
    if os.environ.get("DEMO_VENV"):
        return Path(os.environ["DEMO_VENV"])
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(ROOT / "requirements.txt")],
                   check=True, timeout=1500)
    return venv


def _tree_rss(proc: psutil.Process) -> int:
    members = [proc] + proc.children(recursive=True)
    return sum(p.memory_info().rss for p in members if p.is_running())


def status_field(proc: psutil.Process | int, field: str) -> int | None:
    """A field of ``/proc/PID/status`` in bytes (Linux): ``VmHWM`` is the true peak, which samples can miss."""
    try:
        pid = proc if isinstance(proc, int) else proc.pid
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    venv = _fresh_venv(base)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(TWO_STAGE_DEMO="1", TWO_STAGE_CACHE=str(base / "cache"), TF_CPP_MIN_LOG_LEVEL="3")
    with running_app([str(venv / "bin" / "streamlit")], env, base / "streamlit.log") as (url, proc):
        yield url, psutil.Process(proc.pid), base


def visit_and_classify(url: str, photo: Path, on_step=lambda step: None) -> None:
    """What a visitor does (also ``bench/demo_memory.py``'s flow): every page, checked for errors; a photo on
    Classify, answered by the shipped model with no training and no network; back to Results. ``on_step`` is
    called after each step with its name."""
    from playwright.sync_api import expect

    with chromium_page(1400, 1200) as page:
        page.goto(url)
        expect(page.get_by_text("Demo mode.")).to_be_visible(timeout=90_000)
        for title in PAGES:
            page.locator("[data-testid='stSidebarNav'] a", has_text=title).click()
            expect(page.get_by_role("heading", name=HEADINGS.get(title, title))).to_be_visible(timeout=60_000)
            page.wait_for_timeout(1500)  # let the page finish its run before checking for errors
            assert page.locator("[data-testid='stException']").count() == 0, f"{title} shows an exception"
            assert "Traceback" not in page.content(), title
            on_step(title)
        page.locator("[data-testid='stSidebarNav'] a", has_text="Classify").click()
        expect(page.get_by_role("heading", name="Classify")).to_be_visible(timeout=60_000)
        upload_photo(page, photo)
        expect(page.locator("[data-testid='stMetric']")).to_have_count(3, timeout=30_000)
        on_step("classified a photo")
        # The shipped results are on the Results page, labelled as the reference run.
        page.locator("[data-testid='stSidebarNav'] a", has_text="Results").click()
        expect(page.get_by_text("reference", exact=False).first).to_be_visible(timeout=60_000)
        on_step("Results again")


def test_demo_pages_and_classify_in_a_fresh_environment(demo_server, tmp_path):
    url, server, base = demo_server
    photo = tmp_path / "phone_photo.jpg"
    photo.write_bytes(jpeg_with_exif_rotation())
    samples = []
    visit_and_classify(url, photo, lambda step: samples.append(_tree_rss(server)))
    peak = max(samples + [status_field(server, "VmHWM") or 0])
    anonymous = status_field(server, "RssAnon")
    print(f"demo server peak RSS while browsing and classifying: {peak / 2**20:.0f} MiB"
          + (f" (anonymous memory at the end: {anonymous / 2**20:.0f} MiB)" if anonymous else ""))
    assert peak < MEMORY_LIMIT
    # Nothing the visitor uploaded was written anywhere under the cache.
    cache = base / "cache"
    written = [f for f in cache.rglob("*") if f.is_file()] if cache.exists() else []
    assert not any(f.suffix.lower() in (".jpg", ".jpeg", ".png") for f in written)
