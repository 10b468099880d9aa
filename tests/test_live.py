"""A job's measured parts and its time left (core.jobs.live): a quick run's events replayed at chosen times.

The quick run the issue timed took 4 min against "at most about 43 s": start-up, loading and each repeat's work
between its stages were in no estimate, the bar counted epochs (stage one, most of the time, was a third of it)
and it stalled at "re-estimating BatchNorm statistics · at most 0 s left" on a CNN without BatchNorm.
"""

from __future__ import annotations

import pytest

from core.jobs.live import apply_event, elapsed, fraction_done, note_claim, note_queued, time_left
from core.jobs.progress import job_progress, progress_text

EPOCHS = 3


def new_job(estimate: dict | None = None, ahead: int = 0) -> dict:
    progress = {"repeat": 0, "repeats": 2, "repeats_done": 0, "stage": "queued", "epoch": 0, "epochs": EPOCHS,
                "history": [], "todo": [], "epoch_seconds": {}}
    note_queued(progress, 0.0, ahead, estimate)
    return {"id": "j", "state": "queued", "repeats": 2, "protocol": {"epochs": EPOCHS}, "progress": progress,
            "created": 0.0, "started": None}


def claim(job: dict, at: float) -> None:
    job.update(state="running", started=at)
    note_claim(job, at)


def repeat(job: dict, r: int, start: float, announced: bool = False) -> float:
    """One repeat: 3 stage-one epochs of 20 s, 30 s evaluating (no BatchNorm), features, 6 head epochs of 1 s,
    10 s saving; returns when it was stored (106 s later: 66 s of epochs, 40 s between them and after)."""
    p, t = job["progress"], start
    if not announced:
        apply_event(p, {"stage": "repeat", "repeat": r}, now=t)
    for e in range(1, EPOCHS + 1):
        t += 20
        apply_event(p, {"stage": "stage1", "epoch": e, "epochs": EPOCHS, "repeat": r, "logs": {"seconds": 20.0}},
                    now=t)
    apply_event(p, {"stage": "batchnorm", "layers": 0, "repeat": r}, now=t)
    t += 30
    apply_event(p, {"stage": "features", "seconds": 2.0, "repeat": r}, now=t)
    for head in ("stage2_adam", "stage2_sgd"):
        for e in range(1, EPOCHS + 1):
            t += 1
            apply_event(p, {"stage": head, "epoch": e, "epochs": EPOCHS, "repeat": r, "logs": {"seconds": 1.0}},
                        now=t)
    t += 10
    apply_event(p, {"stage": "stored", "repeat": r}, now=t)
    return t


def test_start_up_loading_and_the_work_between_stages_are_measured_and_counted_in_the_time_left():
    job = new_job()
    claim(job, 10.0)
    p = job["progress"]
    apply_event(p, {"stage": "plan", "todo": [0, 1], "repeats": 2, "repeats_done": 0}, now=25.0)
    apply_event(p, {"stage": "repeat", "repeat": 0}, now=25.0)  # the worker's order: repeat, then loading
    apply_event(p, {"stage": "loading", "dataset": "fashion-mnist"}, now=25.0)
    assert p["measured"]["startup"] == 25.0  # queued at 0, nothing ahead, first event at 25
    stored = repeat(job, 0, start=60.0, announced=True)
    assert p["measured"]["loading"] == 35.0  # until the first epoch began
    assert p["measured"]["between"] == [pytest.approx(106 - 66), 1]  # the wall time less its epochs
    # repeat 2, just started: its whole measured repeat is left (60 + 40 + 6 s), nothing for start-up or loading
    apply_event(p, {"stage": "repeat", "repeat": 1}, now=stored)
    assert time_left(p, now=stored) == pytest.approx(106)


def test_a_cnn_without_batchnorm_is_evaluated_not_re_estimated_and_the_heads_are_still_ahead():
    job = new_job()
    claim(job, 0.0)
    p = job["progress"]
    apply_event(p, {"stage": "plan", "todo": [0], "repeats": 1, "repeats_done": 0}, now=1.0)
    apply_event(p, {"stage": "repeat", "repeat": 0}, now=1.0)
    for e in range(1, EPOCHS + 1):
        apply_event(p, {"stage": "stage1", "epoch": e, "epochs": EPOCHS, "repeat": 0, "logs": {"seconds": 20.0}},
                    now=1.0 + 20 * e)
    apply_event(p, {"stage": "batchnorm", "layers": 0, "repeat": 0}, now=61.0)
    frac, text = job_progress({**job, "repeats": 1}, now=61.0)
    assert "evaluating stage one" in text and "BatchNorm" not in text
    assert time_left(p, now=61.0) > 0, "both heads are still to train (it said 'at most 0 s left')"


def test_the_bar_moves_with_time_so_stage_one_fills_most_of_it():
    """After stage one of the only repeat the epoch count is a third; by time it is most of the bar."""
    job = new_job(estimate={"stage1_epoch": 20.0, "head_epoch": 1.0, "between": 40.0})
    job["repeats"] = 1
    claim(job, 0.0)
    p = job["progress"]
    apply_event(p, {"stage": "plan", "todo": [0], "repeats": 1, "repeats_done": 0}, now=0.0)
    apply_event(p, {"stage": "repeat", "repeat": 0}, now=0.0)
    for e in range(1, EPOCHS + 1):
        apply_event(p, {"stage": "stage1", "epoch": e, "epochs": EPOCHS, "repeat": 0, "logs": {"seconds": 20.0}},
                    now=20.0 * e)
    by_time = fraction_done(job, now=60.0)
    assert by_time == pytest.approx(60 / (60 + 40 + 6))
    assert job_progress(job, now=60.0)[0] == by_time > 0.5 > 1 / 3


def test_before_its_first_epoch_a_job_has_its_estimate_and_the_page_says_elapsed_and_left():
    job = new_job(estimate={"stage1_epoch": 20.0, "head_epoch": 1.0, "between": 30.0, "startup": 15.0,
                            "loading": 35.0})
    assert time_left(job["progress"], now=0.0) == pytest.approx(15 + 35 + 2 * (60 + 30 + 6))
    claim(job, 5.0)
    apply_event(job["progress"], {"stage": "loading", "dataset": "fashion-mnist"}, now=20.0)
    text = progress_text(job, now=30.0)
    assert "25 s elapsed" in text and "at most about" in text
    assert elapsed(job, now=30.0) == 25.0
    # 25 s of loading left by the estimate, then two whole repeats
    assert time_left(job["progress"], now=30.0) == pytest.approx(25 + 2 * 96)


def test_start_up_is_not_measured_behind_another_job():
    job = new_job(ahead=1)
    claim(job, 300.0)
    apply_event(job["progress"], {"stage": "loading", "dataset": "fashion-mnist"}, now=305.0)
    assert "startup" not in job["progress"].get("measured", {})
