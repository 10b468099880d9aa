"""Train and the quick run: a time estimate before submitting, subset fields that follow their checkboxes,
progress in epochs with stages in words, and finished jobs that show their numbers and link to their
experiment on Results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.app import reference
from core.protocol.config import Protocol
from core.jobs.queue import JobQueue
from core.results.store import RunStore
from tests.conftest import synthetic_images, write_class_folders
from ui.common import job_progress, live_title

APP = str(Path(__file__).resolve().parent.parent / "app.py")
RECORDS = Path(__file__).resolve().parent / "data" / "dogs_cats_records.json"
TIMEOUT = 120


@pytest.fixture
def stored(tmp_path, monkeypatch):
    """A cache holding a real two-repeat Dogs & Cats experiment; no shipped bundle."""
    monkeypatch.setattr(reference, "REFERENCE_DIR", tmp_path / "no_reference")
    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    runs = json.loads(RECORDS.read_text())
    store = RunStore(tmp_path / "cache")
    for run in runs:
        store.put(run)
    store.close()
    monkeypatch.setenv("TWO_STAGE_CACHE", str(tmp_path / "cache"))
    return runs


def open_page(page: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def captions(at: AppTest) -> str:
    return " ".join(str(c.value) for c in at.caption)


def test_the_estimate_is_shown_before_submitting_and_subset_fields_follow_their_checkboxes(stored, tmp_path):
    images, labels = synthetic_images(10, 2)
    folder = write_class_folders(tmp_path / "pets", images, labels, ["cats", "dogs"])
    at = open_page("pages/train.py")
    at.selectbox(key="train_dataset").set_value("dogs-cats").run()
    at.text_input(key="data_path::dogs-cats").set_value(str(folder)).run()
    assert at.number_input(key="train_limit").disabled and at.number_input(key="train_test_limit").disabled
    text = captions(at)
    assert "Estimated time: at most about" in text and "2 stored repeats of the dogs-cats CNN" in text
    at.checkbox(key="train_use_limit").check().run()
    assert not at.number_input(key="train_limit").disabled and at.number_input(key="train_test_limit").disabled
    before = captions(at)
    at.number_input(key="train_repeats").set_value(6).run()
    assert captions(at) != before, "the estimate follows the settings"
    assert not JobQueue().jobs(), "nothing is queued before the button"


def test_a_finished_job_shows_its_accuracies_p_values_and_links_to_its_experiment(stored):
    protocol = Protocol.from_dict(stored[0]["protocol"])
    assert protocol.key() == stored[0]["key"]
    queue = JobQueue()
    job_id = queue.submit(protocol, 2)  # every repeat stored: done at once
    queue.close()
    at = open_page("pages/train.py")
    at.selectbox(key="train_watch").set_value(job_id).run()
    assert [m.label for m in at.metric] == ["Stage one (CNN), test", "Adam head, test", "SGD head, test"]
    assert "p = " in captions(at)
    # this real two-epoch run on 160 photos never got past guessing, and the page says so beside the numbers
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("CNN + second stage (Adam) ends at 50.5% test accuracy, no better than chance")
               and "about 10 optimizer steps" in w for w in warnings), warnings
    links = [p.proto for p in at.get("page_link") if p.proto.page == "results"]
    assert links and links[0].query_string == f"experiment={protocol.key()}"


def test_after_the_quick_run_see_the_results_opens_that_experiment(stored):
    protocol = Protocol.from_dict(stored[0]["protocol"])
    queue = JobQueue()
    job_id = queue.submit(protocol, 2)
    queue.close()
    at = open_page("pages/overview.py", quick_job=job_id)
    links = {p.proto.label: p.proto.query_string for p in at.get("page_link") if p.proto.page == "results"}
    assert links["See the results"] == f"experiment={protocol.key()}"
    table = at.table[0].value
    verdict = table.loc["Dogs & Cats", "verdict (ours)"]
    assert verdict.startswith("The second stage's (Adam head) gain")


def running_job(stage: str, epoch: int, repeat: int = 1, done: int = 1) -> dict:
    return {"state": "running", "repeats": 3, "protocol": {"epochs": 5},
            "progress": {"repeat": repeat, "repeats_done": done, "stage": stage, "epoch": epoch, "epochs": 5}}


def test_progress_counts_epochs_across_repeats_and_stages_in_words():
    frac, text = job_progress(running_job("stage2_adam", 2))
    assert frac == pytest.approx((15 + 5 + 2) / 45)  # one repeat done, stage one, then 2 Adam epochs
    assert "22 of 45 epochs" in text and "repeat 2" in text and "stage two, Adam head" in text
    assert "stage2_adam" not in text
    steps = [job_progress(running_job(s, e))[0] for s, e in
             (("repeat", 0), ("stage1", 3), ("features", 0), ("stage2_adam", 5), ("stage2_sgd", 4))]
    assert steps == sorted(steps), "the bar never moves back within a repeat"
    assert job_progress({"state": "done", "repeats": 3, "protocol": {"epochs": 5}, "progress": {}})[0] == 1.0


def test_the_live_title_is_never_half_filled():
    assert live_title(running_job("stage2_sgd", 1, repeat=0)) == "Live: repeat 1 of 3, stage two, SGD head"
    assert live_title(running_job("repeat", 0, repeat=0)) == "Live: repeat 1 of 3 (starting the repeat)"
    assert live_title(running_job("batchnorm", 0)) == "Live: repeat 2 of 3 (re-estimating BatchNorm statistics)"
