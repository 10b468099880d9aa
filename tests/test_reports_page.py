"""The Related reports page: every report renders (claims, models, plan, results) without an error, and shows
a stored sweep's plot with the report's published numbers beside ours."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.app import reference
from core.results.store import RunStore

from .test_sweeps import fake_run

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(reference, "REFERENCE_DIR", tmp_path / "no_reference")
    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    path = tmp_path / "cache"
    monkeypatch.setenv("TWO_STAGE_CACHE", str(path))
    return path


def open_reports() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("app_pages/reports.py").run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "Something went wrong" in str(e.value)]


def test_every_report_renders_with_an_empty_cache(cache):
    at = open_reports()
    assert_clean(at)
    for report_id in ("001", "002", "003", "004"):
        at.radio(key="reports_id").set_value(report_id).run()
        assert_clean(at)
        text = " ".join(str(m.value) for m in at.markdown)
        assert "published by report" in text and "The experiment" in text
        assert any("No runs of report" in str(i.value) for i in at.info)
        assert any(f"python -m core report {report_id}" in str(c.value) for c in at.code)


def test_a_stored_sweep_is_plotted_beside_the_reports_numbers(cache):
    from core.protocol.config import Protocol

    store = RunStore(cache)
    base = Protocol(dataset="cifar10", architecture="004-model2", image_size=128)
    y = [0, 1, 2, 1]
    for preset, acc in (("none", .8), ("aug1", .7), ("aug2", .72)):
        p = base.with_(augment_preset=preset)
        for r in range(2):
            store.put(fake_run(p, r, {"stage1": acc + r / 100, "adam": acc + .02, "sgd": acc}, y,
                               {"stage1": [0, 1, 2, 2], "adam": y, "sgd": y}))
    at = open_reports()
    at.radio(key="reports_id").set_value("004").run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) >= 2  # the sweep's plot and the confusion matrix
    text = " ".join(str(m.value) for m in at.markdown)
    assert "Does a two-stage head help" in text and "Sweeps" in text
    captions = " ".join(str(c.value) for c in at.caption)
    assert "Red crosses: report 004's published numbers" in captions


@pytest.mark.parametrize("size", ("small", "full"))
def test_backbone_weights_on_the_page_reach_only_the_backbone_steps(cache, size):
    """Report 004 trains CNNs from scratch beside its ImageNet models: weights typed on the page must not make
    the CNN steps invalid (the CLI's ``report 004 --weights ...`` runs; the page once refused every step)."""
    at = open_reports()
    at.radio(key="reports_id").set_value("004").run()
    at.radio(key="size_004").set_value(size).run()
    at.text_input(key="w_004").set_value("imagenet").run()
    assert_clean(at)
    assert not [w.value for w in at.warning if "does not fit the plan" in str(w.value)]
    assert any(b.label.startswith("Queue report 004") for b in at.button)


@pytest.fixture
def first_visit(tmp_path, monkeypatch) -> Path:
    """A fresh clone: the shipped reference/ and an empty cache."""
    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    monkeypatch.setenv("TWO_STAGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_our_results_show_the_shipped_small_plans_on_a_first_visit(first_visit):
    """Every "Our results" tab said "no runs yet": the small plans' records now ship in reference/reports/."""
    at = open_reports()
    for report_id in ("001", "002", "003", "004"):
        at.radio(key="reports_id").set_value(report_id).run()
        assert_clean(at)
        assert not any("No runs of report" in str(i.value) for i in at.info), report_id
        text = " ".join(str(m.value) for m in at.markdown)
        assert "Does a two-stage head help these models too?" in text, report_id
        captions = " ".join(str(c.value) for c in at.caption)
        assert f"ship with the app (`reference/reports/{report_id}/`" in captions, report_id


def test_report_004_says_cifar10_and_refuses_to_queue_while_it_is_missing(cache, tmp_path, monkeypatch):
    """The text said "model 2 on Dogs & Cats" under --dataset cifar10, and the queue button was enabled while
    CIFAR-10 was "not found" (both queued jobs then failed)."""
    from core.app import preview

    monkeypatch.setattr(preview, "KERAS_DATASETS_DIR", tmp_path / "no_keras_cache")
    at = open_reports()
    at.radio(key="reports_id").set_value("004").run()
    assert_clean(at)
    experiment = next(str(m.value) for m in at.markdown if "The experiment" in str(m.value))
    assert "on CIFAR-10" in experiment and "Dogs & Cats" not in experiment
    assert at.button(key="queue_004").disabled
    warning = " ".join(str(w.value) for w in at.warning)
    assert "CIFAR-10 is not found" in warning and "cifar-10-python.tar.gz" in warning
    assert not (cache / "jobs").exists() or not __import__("core.jobs.queue").jobs.queue.JobQueue(cache).jobs()


def test_a_published_tables_average_row_and_a_macro_average_are_not_cut_off(first_visit, monkeypatch):
    """Report 001's headline 0.8764 is its table's 11th row, below the ten rows a table shows by default."""
    import streamlit as st

    heights: list[tuple[bool, object]] = []
    original = st.dataframe

    def recording(data=None, *args, **kwargs):
        frame = getattr(data, "data", data)  # a Styler keeps its frame in .data
        text = frame.to_string() if hasattr(frame, "to_string") else ""
        heights.append(("average" in text, kwargs.get("height")))
        return original(data, *args, **kwargs)

    monkeypatch.setattr(st, "dataframe", recording)
    at = open_reports()
    assert_clean(at)
    with_average = [h for has, h in heights if has]
    assert with_average and set(with_average) == {"content"}, heights


def test_the_builders_words_are_prose_not_a_raw_docstring(cache):
    at = open_reports()
    at.radio(key="reports_id").set_value("002").run()
    assert_clean(at)
    text = " ".join(str(m.value) for m in at.markdown)
    assert "frozen" in text and ":func:" not in text and ":class:" not in text and "``" not in text
    assert not [c for c in at.code if "Report 002" in str(c.value)], "no code block that cuts lines off"
