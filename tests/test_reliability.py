"""An unusable cache or a full disk gives one clear line, never a traceback, and loses nothing.

Read-only caches: the tests run as root, for whom ``chmod`` does not stop writes, so read-only-ness is simulated
by making :func:`core.results.store.writable` (the one probe every opener asks) answer False; the folders are
``chmod``-ed read-only as well, to check that opening never changes an existing folder's mode bits.
"""

from __future__ import annotations

import shutil
import signal
import stat
from collections import namedtuple
from pathlib import Path

import pytest

import core.results.store
from core.cli.main import main
from core.protocol.config import Protocol
from core.jobs.queue import JobQueue
from core.results.store import RunStore

from .conftest import needs_fashion

TINY = ["--dataset", "fashion-mnist", "--epochs", "1", "--limit", "200", "--test-limit", "100"]
TINY_PROTOCOL = Protocol(dataset="fashion-mnist", epochs=1, limit=200, test_limit=100)


@pytest.fixture
def finished_cache(tmp_path_factory, tmp_path) -> Path:
    """A private copy of the session's tiny finished experiment (two repeats), safe to damage."""
    from .conftest import HAS_FASHION
    from .test_classify import tiny_experiment_cache

    if not HAS_FASHION:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    copy = tmp_path / "cache"
    shutil.copytree(tiny_experiment_cache(tmp_path_factory.getbasetemp()), copy)
    return copy


@pytest.fixture
def keep_signal_handlers():
    """A worker started in-process installs SIGINT/SIGTERM handlers; put pytest's back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def cli(capfd, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capfd.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")] if p.is_dir()}


# ------------------------------------------------------------------------------------------ read-only cache

def test_opening_a_cache_never_changes_an_existing_folders_permissions(tmp_path):
    root = tmp_path / "cache"
    RunStore(root).close()
    JobQueue(root).close()
    for folder in [root, *root.iterdir()]:
        folder.chmod(0o555)  # read-only on purpose (root can still write: this checks the mode bits only)
    before = modes(root)
    RunStore(root).close()
    JobQueue(root).close()
    assert modes(root) == before


def test_every_command_on_a_read_only_cache_says_so_in_one_line(finished_cache, capfd, monkeypatch,
                                                                  keep_signal_handlers, tmp_path):
    queue = JobQueue(finished_cache)
    done = queue.submit(TINY_PROTOCOL, 2)  # fully stored: recorded as done without training
    queue.close()
    for folder in [finished_cache, *finished_cache.iterdir()]:
        folder.chmod(0o555)
    before = modes(finished_cache)
    monkeypatch.setattr(core.results.store, "writable", lambda path: False)
    cache = ["--cache", str(finished_cache)]

    code, out, err = cli(capfd, "run", *TINY, "--repeats", "2", *cache, "--out", str(tmp_path / "runs.json"))
    assert code == 0 and "Table 1 (ours): 2 repeats" in out and "read-only: 2 of 2 repeats" in err
    assert (tmp_path / "runs.json").is_file()
    code, out, err = cli(capfd, "run", *TINY, "--repeats", "3", *cache)
    assert code == 2 and "read-only: 2 of 3 repeats" in err
    code, out, err = cli(capfd, "jobs", *cache)
    assert code == 0 and done in out and "read-only" in err
    code, out, err = cli(capfd, "watch", done, *cache)
    assert code == 0 and f"{done} done" in out and "read-only" in err
    for args in (["submit", *TINY, "--repeats", "3"], ["cancel", done], ["worker", "--max-jobs", "1"]):
        code, out, err = cli(capfd, *args, *cache)
        assert code == 2 and "is read-only" in one_error_line(err), args
    assert modes(finished_cache) == before
    assert JobQueue(finished_cache).jobs()[0]["state"] == "done"


# ----------------------------------------------------------------------------------------- damaged databases

def damage(db: Path, how: str) -> None:
    """Overwrite a whole SQLite file with junk, or only its last tenth (found by a later read, not on open)."""
    size = db.stat().st_size
    with open(db, "r+b") as fh:
        if how == "tail":
            fh.seek(size - size // 10)
        fh.write(bytes(range(256)) * (size // 256 + 1))
    for extra in ("cache.db-wal", "cache.db-shm"):
        (db.parent / extra).unlink(missing_ok=True)


def filled_queue(root: Path) -> None:
    queue = JobQueue(root)
    for epochs in range(1, 31):
        queue.submit(Protocol(dataset="fashion-mnist", epochs=epochs, limit=200), 1)
    queue.close()


@pytest.mark.parametrize("how", ["junk", "tail"])
def test_a_damaged_job_queue_is_one_line_that_says_how_to_move_it_aside(tmp_path, capfd, keep_signal_handlers,
                                                                        how):
    root = tmp_path / "cache"
    filled_queue(root)
    damage(root / "jobs" / "cache.db", how)
    cache = ["--cache", str(root)]
    commands = [["jobs"], ["watch"], ["cancel", "abc"], ["submit", *TINY, "--repeats", "1", "--no-worker"],
                ["worker", "--max-jobs", "1"]]
    for args in commands if how == "junk" else commands[:2]:
        code, out, err = cli(capfd, *args, *cache)
        line = one_error_line(err)
        assert code == 2 and "job queue" in line and "damaged" in line and f"mv {root / 'jobs'}" in line, args


def test_a_damaged_records_database_is_one_line_for_run_and_bundle(tmp_path, capfd):
    root = tmp_path / "cache"
    store = RunStore(root)
    store.put({"key": "k", "repeat": 0, "protocol": TINY_PROTOCOL.to_dict()})
    store.close()
    damage(root / "runs" / "cache.db", "junk")
    for args in (["run", *TINY, "--repeats", "1"], ["bundle", "--dest", str(tmp_path / "ref")]):
        code, out, err = cli(capfd, *args, "--cache", str(root))
        line = one_error_line(err)
        assert code == 2 and "run records" in line and "damaged" in line and f"mv {root / 'runs'}" in line
    assert not (tmp_path / "ref").exists()


@needs_fashion
@pytest.mark.slow
def test_pages_show_the_shipped_reference_beside_a_damaged_cache(finished_cache, monkeypatch):
    from core.app import reference
    from tests.test_pages import APP, TIMEOUT, assert_clean, texts
    from streamlit.testing.v1 import AppTest

    assert reference.bundles(), f"no reference bundle in {reference.REFERENCE_DIR}"
    filled_queue(finished_cache)
    damage(finished_cache / "runs" / "cache.db", "junk")
    damage(finished_cache / "jobs" / "cache.db", "junk")
    monkeypatch.setenv("TWO_STAGE_CACHE", str(finished_cache))
    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    for page in ("app_pages/overview.py", "app_pages/results.py", "app_pages/classify.py"):
        if page != "app_pages/overview.py":
            at.switch_page(page).run()
        assert_clean(at, page)
        warning = " ".join(texts(at, "warning"))
        assert "only the shipped reference results are shown" in warning and "damaged" in warning, page
        assert f"mv {finished_cache / 'runs'}" in warning, page
        if page.endswith("overview.py"):
            assert "reference" in " ".join(texts(at, "caption")), "the standings still show the reference run"
            assert any(f"mv {finished_cache / 'jobs'}" in t for t in texts(at, "info")), "the quick run says why"
        if page.endswith("results.py"):
            assert any("reference" in t for t in texts(at, "info") + texts(at, "caption")), page
        if page.endswith("classify.py"):
            assert at.selectbox[0].options and at.file_uploader, "the shipped model still classifies"


# ------------------------------------------------------------------------------------------------ full disk

Usage = namedtuple("Usage", "total used free")


def full_disk_for(marker: str):
    """A ``shutil.disk_usage`` whose disk is full (1 MB free) for paths containing ``marker``."""
    real = shutil.disk_usage

    def usage(path):
        return Usage(2**40, 2**40 - 2**20, 2**20) if marker in str(path) else real(path)
    return usage


@needs_fashion
@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_one_line_and_keeps_finished_repeats(tmp_path, capfd, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setattr(shutil, "disk_usage", full_disk_for(f"{TINY_PROTOCOL.key()}/0001"))  # repeat 2's folder
    code, out, err = cli(capfd, "run", *TINY, "--repeats", "2", "--cache", str(root))
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: not enough free disk space in ") and "1 MB free" in line
    assert line.endswith("finished repeats are kept")
    store = RunStore(root)
    assert store.has(TINY_PROTOCOL, 0) and not store.has(TINY_PROTOCOL, 1)


@needs_fashion
def test_a_full_disk_fails_the_workers_job_with_that_line(cache_dir, monkeypatch):
    from core.jobs.worker import Worker

    monkeypatch.setattr(shutil, "disk_usage", full_disk_for(str(cache_dir)))
    queue = JobQueue(cache_dir)
    job_id = queue.submit(TINY_PROTOCOL, 1)
    worker = Worker(cache_dir, idle_exit=0, max_jobs=1, log=lambda text: None)
    assert worker.run() == 0
    job = queue.job(job_id)
    assert job["state"] == "failed" and job["error"].startswith("not enough free disk space in ")
    assert not RunStore(cache_dir).has(TINY_PROTOCOL, 0)


# ------------------------------------------------------------------------------------------ the public demo

def open_demo_page(page: str, monkeypatch, demo: bool = True):
    from streamlit.testing.v1 import AppTest

    from tests.test_pages import APP, TIMEOUT

    if demo:
        monkeypatch.setenv("TWO_STAGE_DEMO", "1")
    else:
        monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page(page).run()
    return at


def test_a_page_error_shows_an_id_not_server_paths_and_logs_the_details(cache_dir, monkeypatch, caplog):
    import logging

    import core.app.preview

    def broken():
        raise RuntimeError("cannot read /srv/secret/models/stage1.keras")

    monkeypatch.setattr(core.app.preview, "demo_image", broken)
    with caplog.at_level(logging.ERROR, logger="two_stage.app"):
        at = open_demo_page("app_pages/augmentation.py", monkeypatch)
    shown = " ".join(str(e.value) for e in [*at.error, *at.caption, *at.warning, *at.markdown])
    assert not at.exception and "Something went wrong on this page (error id " in shown
    assert "/srv/secret" not in shown and "RuntimeError" not in shown
    error_id = shown.split("(error id ")[1][:8]
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert logged and "/srv/secret/models/stage1.keras" in str(logged[0].exc_info[1])
    at = open_demo_page("app_pages/augmentation.py", monkeypatch, demo=False)  # the user's own machine: details
    assert any("/srv/secret/models/stage1.keras" in str(c.value) for c in at.caption)


def test_the_augmentation_upload_is_size_checked_on_the_server(cache_dir, monkeypatch):
    import cv2
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 256, (1500, 1500, 3), dtype=np.uint8)
    data = cv2.imencode(".png", noise)[1].tobytes()  # a real, decodable 2 MP image of about 6.7 MB
    assert len(data) > 5 * 2**20
    at = open_demo_page("app_pages/augmentation.py", monkeypatch)  # demo mode: 5 MB
    at.radio[0].set_value("Upload an image").run()
    at.file_uploader[0].set_value(("noise.png", data, "image/png")).run()
    assert not at.exception
    assert any("larger than 5 MB" in str(e.value) for e in at.error)
    assert not at.image, "nothing decoded or augmented"


# ------------------------------------------------------------------------------------ hostile input, one line

def test_a_pickled_row_in_the_job_queue_is_one_line_for_every_queue_command(tmp_path, capfd, keep_signal_handlers):
    """A planted pickle in the jobs database once ended `jobs`, `watch`, `cancel` and `worker` in a traceback
    (UnsafeCacheError through queue -> store -> safe_load); the run records already said it in one line."""
    import pickle
    import sqlite3

    from .test_safe_load import _Payload

    root = tmp_path / "cache"
    filled_queue(root)
    marker = tmp_path / "ran"
    con = sqlite3.connect(root / "jobs" / "cache.db")
    con.execute("UPDATE Cache SET mode = 4, value = ? WHERE rowid = (SELECT MAX(rowid) FROM Cache)",
                (sqlite3.Binary(pickle.dumps(_Payload(marker))),))
    con.commit()
    con.close()
    for args in (["jobs"], ["watch"], ["cancel", "abc"], ["worker", "--max-jobs", "1"]):
        code, out, err = cli(capfd, *args, "--cache", str(root))
        line = one_error_line(err)
        assert code == 2 and "job queue" in line and "never writes" in line, args
        assert f"mv {root / 'jobs'} {root / 'jobs'}.untrusted" in line, args
    assert not marker.exists()


@pytest.mark.parametrize("where", ["missing folder", "a folder"])
def test_run_refuses_an_out_file_it_could_not_write_before_training(tmp_path, capfd, where):
    out = tmp_path / "nonexistent" / "dir" / "x.json" if where == "missing folder" else tmp_path
    cache = tmp_path / "cache"
    code, _, err = cli(capfd, "run", *TINY, "--repeats", "1", "--cache", str(cache), "--out", str(out))
    line = one_error_line(err)
    assert code == 2 and "--out" in line and ("does not exist" in line or "is a folder" in line)
    assert not cache.exists()  # refused before anything was trained (or even the cache made)


@pytest.mark.parametrize("args, names", [(["--dataset", "imagenet"], "--dataset")])
def test_a_bad_option_is_one_line_that_names_it_not_the_whole_usage(capfd, args, names):
    with pytest.raises(SystemExit) as stopped:
        main(["run", *args])
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stopped.value.code == 2 and len(lines) == 1 and names in lines[0] and "--help" in lines[0], err


def _all_text(at) -> str:
    parts = [*at.error, *at.warning, *at.info, *at.caption, *at.markdown, *at.success]
    text = " ".join(str(e.value) for e in parts)
    for frame in at.dataframe:
        text += " " + frame.value.to_string()
    return text


def test_demo_mode_shows_a_failed_jobs_id_not_its_reason(cache_dir, monkeypatch):
    """A CIFAR-10 job failed with Keras' "URL fetch failure on https://...", a full disk with the cache's path:
    the demo showed both verbatim. There: a plain sentence and the job's id, under which the worker's log
    keeps the reason; on the user's own machine the reason itself."""
    queue = JobQueue(cache_dir)
    job_id = queue.submit(Protocol(dataset="cifar10", epochs=1, limit=200), 1)
    job = queue.claim("w1", 1, "host")
    assert job["id"] == job_id
    queue.finish(job_id, "w1", "failed", error="Exception: URL fetch failure on https://www.cs.toronto.edu/"
                                               "~kriz/cifar-10-python.tar.gz: None -- /root/.keras/datasets")
    queue.close()
    at = open_demo_page("app_pages/train.py", monkeypatch)
    shown = _all_text(at)
    assert not at.exception and "https://" not in shown and "/root/.keras" not in shown
    assert f"error id {job_id}" in shown
    at = open_demo_page("app_pages/train.py", monkeypatch, demo=False)
    assert "URL fetch failure on https://" in _all_text(at)


def test_demo_mode_says_the_queue_cannot_be_read_with_an_id_not_the_exception(cache_dir, monkeypatch, caplog):
    """Train said "Could not read the queue right now (UnsafeCacheError: ...)" to every visitor of the demo."""
    import logging
    import pickle
    import sqlite3

    filled_queue(cache_dir)
    con = sqlite3.connect(cache_dir / "jobs" / "cache.db")
    con.execute("UPDATE Cache SET mode = 4, value = ? WHERE rowid = (SELECT MAX(rowid) FROM Cache)",
                (sqlite3.Binary(pickle.dumps({"planted": True})),))
    con.commit()
    con.close()
    with caplog.at_level(logging.ERROR, logger="two_stage.app"):
        at = open_demo_page("app_pages/train.py", monkeypatch)
    shown = _all_text(at)
    assert not at.exception and "error id" in shown
    assert "UnsafeCacheError" not in shown and str(cache_dir) not in shown and "pickle" not in shown
    assert any("never writes" in r.getMessage() for r in caplog.records), "the details are in the server's log"


def test_a_long_experiment_link_is_not_echoed_whole(cache_dir, monkeypatch):
    """A 10,000-character ?experiment= was repeated in full in the page's warning."""
    from streamlit.testing.v1 import AppTest

    from tests.test_pages import APP, TIMEOUT

    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["experiment"] = "x" * 10_000
    at.run()
    at.switch_page("app_pages/results.py").run()
    warnings = [str(w.value) for w in at.warning if "link names an experiment" in str(w.value)]
    assert warnings and all(len(w) < 200 for w in warnings), [len(w) for w in warnings]


def test_a_negative_seed_is_one_line_that_names_it_before_anything_runs(tmp_path, capfd):
    """`--seed -1` ended in numpy's "expected non-negative integer" after loading the data."""
    code, _, err = cli(capfd, "run", "--seed", "-1", "--cache", str(tmp_path / "cache"))
    line = one_error_line(err)
    assert code == 2 and "seed" in line and "non-negative" not in line
    assert not (tmp_path / "cache").exists()
