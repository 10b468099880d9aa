"""The Why page: per dataset, the verdict, the per-repeat scatter, the intervention, the size curve and the
ceiling, each with its computed reading, or the command that runs what is missing (AppTest)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.app.catalog import REFERENCE, Experiment
from core.protocol.config import Protocol

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


def open_why(dataset: str | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=180).run()
    app.switch_page("app_pages/why.py").run()
    if dataset:
        app.get("button_group")[0].set_value(dataset).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    return app


def texts(app: AppTest) -> str:
    return "\n".join([m.value for m in app.markdown] + [c.value for c in app.caption] + [c.value for c in app.code])


@pytest.mark.slow
def test_the_shipped_dogs_and_cats_runs_answer_with_their_numbers_and_the_shipped_interventions(cache_dir):
    text = texts(open_why("dogs-cats"))
    assert "gain is reproduced: +6.92 pp" in text
    assert "tracks the BatchNorm lift (Spearman rho = 0.90, p = 7.3e-08)" in text
    # the interventions and the size curve ship on the paper-size photos at 64x64 px: found, and said so
    for lead in ("At BatchNorm momentum 0.9 the head's gain is", "Without augmentation the head's gain is",
                 "Without dropout the head's gain is", "training images the head's gain over stage one goes"):
        assert lead in text, lead
    assert "of 8,000 + 2,000 images" in text and "64x64 px" in text
    assert "**In short:**" in text and "re-estimation's lift significantly" in text  # all arms read together
    assert "hold no readings of a second stage" in text  # the 20 GPU repeats predate the readings ...
    assert "Meanwhile, the readings of another experiment on this dataset" in text  # ... the 64 px runs hold them
    # PreciseBN on the 64 px runs' kept models splits re-estimation's lift (core.app.precise)
    assert "Trained as the paper trains it, averaging the training batches' statistics as fvcore does" in text


def arm(runs: list[dict], **changes) -> list[dict]:
    """The shipped records as if run with other options (numbers shifted so the arms differ)."""
    out = copy.deepcopy(runs)
    protocol = Protocol.from_dict(out[0]["protocol"]).with_(**changes)
    for run in out:
        run["protocol"], run["key"] = protocol.to_dict(), protocol.key()
        if changes.get("bn_momentum"):  # the lag gone: stage one scores what re-estimation gives it
            run["stage1"]["last"] = dict(run["stage1"]["last_bn"])
        if changes.get("limit"):
            sizes = {**run["dataset"]["sizes"], "train": changes["limit"] * 4 // 5}
            run["dataset"] = {**run["dataset"], "sizes": sizes}
        adam = run["adam"]["last"]
        run["readings"] = {"logistic": {**adam, "test_accuracy": adam["test_accuracy"] + 0.01}}
    return out


@pytest.mark.slow
def test_an_intervention_a_size_curve_and_the_readings_are_read_when_they_exist(cache_dir, monkeypatch):
    runs = json.loads((ROOT / "reference" / "dogs-cats" / "records.json").read_text())
    base = arm(runs)
    exps = [Experiment(r[0]["key"], Protocol.from_dict(r[0]["protocol"]), r, REFERENCE)
            for r in (base, arm(runs, bn_momentum=0.9), arm(runs, limit=700), arm(runs, limit=1000))]
    import ui.common

    monkeypatch.setattr(ui.common, "experiments", lambda: exps)
    app = open_why("dogs-cats")
    text = texts(app)
    assert "At BatchNorm momentum 0.9 the head's gain is" in text and "20 paired repeats" in text
    assert "removes gain, as the BatchNorm explanation predicts" in text
    assert "From 560 to 1,120 training images" in text
    assert "The convex optimum on the same features reaches" in text
    assert "Not read yet for this dataset. `python -m core precise-bn NAME --cache DIR`" in text
    assert any(df.value.shape[0] == 2 for df in app.dataframe)  # the two arms side by side


@pytest.mark.slow
def test_the_overview_links_each_verdict_to_its_dataset_on_the_why_page(cache_dir):
    app = AppTest.from_file(APP, default_timeout=180).run()
    links = [link for link in app.get("page_link") if "Why" in link.proto.label]
    assert len(links) >= 3  # one per dataset with shipped results
    app.query_params["dataset"] = "face-mask"
    app.switch_page("app_pages/why.py").run()
    assert "Face Mask" in "\n".join(c.value for c in app.caption)


@pytest.mark.slow
def test_an_intervention_on_other_data_is_found_and_says_which_data_and_size(cache_dir, monkeypatch):
    """The CPU's momentum and size runs are on the paper-size photos at 64x64 px, not the headline's data:
    the page still shows them, naming their protocol, and the headline's missing readings come from them."""
    runs = json.loads((ROOT / "reference" / "dogs-cats" / "records.json").read_text())
    assert not any(run.get("readings") for run in runs)  # the shipped GPU runs predate the readings
    other = {"data_path": "/elsewhere/dogs-cats-paper", "image_size": 64}
    exps = [Experiment(r[0]["key"], Protocol.from_dict(r[0]["protocol"]), r, REFERENCE)
            for r in (runs, arm(runs[:5], limit=2000, **other), arm(runs[:5], limit=2000, bn_momentum=0.9, **other),
                      arm(runs[:5], limit=1000, **other), arm(runs[:5], limit=2000, augment=False, **other))]
    import ui.common

    monkeypatch.setattr(ui.common, "experiments", lambda: exps)
    text = texts(open_why("dogs-cats"))
    assert "At BatchNorm momentum 0.9 the head's gain is" in text and "5 paired repeats" in text
    assert "64x64 px" in text and "2000 training images" in text
    assert "Without augmentation the head's gain is" in text  # the second intervention, on the same base
    assert "From 800 to 1,600 training images" in text
    assert "Meanwhile, the readings of another experiment on this dataset" in text


@pytest.mark.slow
def test_where_no_intervention_was_run_the_page_gives_the_commands_that_run_them(cache_dir):
    text = texts(open_why("face-mask"))
    assert "--bn-momentum 0.9" in text and "--no-augment" in text and "--no-dropout" in text
