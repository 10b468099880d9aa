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
    at = open_page("app_pages/train.py")
    at.selectbox(key="train_dataset").set_value("dogs-cats").run()
    at.text_input(key="data_path::dogs-cats").set_value(str(folder)).run()
    assert at.number_input(key="train_limit").disabled and at.number_input(key="train_test_limit").disabled
    text = captions(at)
    assert "Estimated time: at most about" in text and "2 stored repeats of the dogs-cats CNN" in text
    at.checkbox(key="train_limit_on").check().run()
    assert not at.number_input(key="train_limit").disabled and at.number_input(key="train_test_limit").disabled
    before = captions(at)
    at.number_input(key="train_repeats").set_value(6).run()
    assert captions(at) != before, "the estimate follows the settings"
    assert not JobQueue().jobs(), "nothing is queued before the button"


def test_every_declared_form_option_is_on_the_form_and_reaches_the_submitted_protocol(stored, monkeypatch,
                                                                                       tmp_path):
    """The form is derived from the options' declarations: a field with a label appears with its declared
    title, and what the visitor sets is what is queued (BatchNorm momentum, added this wave, is the check)."""
    from core.protocol.options import form_fields

    from core.jobs import submit

    queue_only = submit.submit_and_start
    monkeypatch.setattr(submit, "submit_and_start", lambda *a, **k: queue_only(*a, **k, start_worker=False))
    images, labels = synthetic_images(10, 2)
    folder = write_class_folders(tmp_path / "pets", images, labels, ["cats", "dogs"])
    at = open_page("app_pages/train.py")
    at.selectbox(key="train_dataset").set_value("dogs-cats").run()
    at.text_input(key="data_path::dogs-cats").set_value(str(folder)).run()
    labels = {w.label for kind in ("number_input", "checkbox", "radio", "selectbox") for w in at.get(kind)}
    for section in ("main", "open"):
        for f, opt in form_fields(Protocol, section):
            assert opt.label in labels or f"Use only some {opt.label.lower()}" in labels, f.name
    at.number_input(key="train_bn_momentum").set_value(0.9).run()
    at.number_input(key="train_epochs").set_value(3).run()
    at.button(key="train_submit").click().run()
    queued = [Protocol.from_dict(job["protocol"]) for job in JobQueue().jobs()]
    assert [(p.dataset, p.bn_momentum, p.epochs) for p in queued] == [("dogs-cats", 0.9, 3)]


def test_a_finished_job_shows_its_accuracies_p_values_and_links_to_its_experiment(stored):
    protocol = Protocol.from_dict(stored[0]["protocol"])
    assert protocol.key() == stored[0]["key"]
    queue = JobQueue()
    job_id = queue.submit(protocol, 2)  # every repeat stored: done at once
    queue.close()
    at = open_page("app_pages/train.py")
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
    at = open_page("app_pages/overview.py", quick_job=job_id)
    links = {p.proto.label: p.proto.query_string for p in at.get("page_link") if p.proto.page == "results"}
    assert links["See the results"] == f"experiment={protocol.key()}"
    table = at.dataframe[0].value
    assert table.loc["Dogs & Cats", "verdict (ours)"] != "–"
    assert any(str(m.value).startswith("**Dogs & Cats.** The second stage's (Adam head) gain") for m in at.markdown)


def test_a_tiny_jobs_verdict_comes_with_the_too_few_steps_explanation(stored):
    """A 160-image, 2-epoch job read "-43.70 pp, not significant" with no word on why such a job says little;
    the Overview's quick run explained it, the Train page did not."""
    protocol = Protocol.from_dict(stored[0]["protocol"])
    queue = JobQueue()
    job_id = queue.submit(protocol, 2)
    queue.close()
    at = open_page("app_pages/train.py")
    at.selectbox(key="train_watch").set_value(job_id).run()
    notes = [str(i.value) for i in at.info]
    assert any("A job this small says little about the paper's question" in n and "5 optimizer steps per epoch"
               in n for n in notes), notes


def test_a_job_whose_data_is_missing_is_refused_before_it_is_queued(stored, tmp_path, monkeypatch):
    """Every queue button refuses a job whose data is not there (the jobs then failed), saying what is
    missing and how to get it."""
    from core.app import preview

    at = open_page("app_pages/train.py")
    at.selectbox(key="train_dataset").set_value("dogs-cats").run()
    assert at.button(key="train_submit").disabled
    assert any("No folder given for Dogs & Cats" in str(w.value) and "cat-and-dog" in str(w.value)
               for w in at.warning)
    monkeypatch.setattr(preview, "KERAS_DATASETS_DIR", tmp_path / "no_keras_cache")
    at.selectbox(key="train_dataset").set_value("cifar10").run()
    assert at.button(key="train_submit").disabled
    assert any("CIFAR-10 is not found" in str(w.value) for w in at.warning)
    assert not JobQueue().jobs(), "nothing was queued"


def test_the_estimate_names_its_measured_parts(stored, tmp_path):
    """The quick run's "at most about 43 s" took 4 min: start-up, loading and the work between stages were in
    no estimate. Each part is now named, with what measured it or that nothing has yet."""
    images, labels = synthetic_images(10, 2)
    folder = write_class_folders(tmp_path / "pets", images, labels, ["cats", "dogs"])
    at = open_page("app_pages/train.py")
    at.selectbox(key="train_dataset").set_value("dogs-cats").run()
    at.text_input(key="data_path::dogs-cats").set_value(str(folder)).run()
    text = captions(at)
    assert "Estimated time: at most about" in text and "per repeat, of which" in text
    assert "is the work between and after the training stages" in text
    assert "starting a worker (not measured here yet)" in text  # no earlier job in this queue
