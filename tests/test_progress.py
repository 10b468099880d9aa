"""A job's progress in words: counted in epochs across repeats and stages, the same text on the pages and in
the CLI's ``jobs``/``watch``."""

from __future__ import annotations

import pytest

from core.cli.jobs import describe_progress
from core.jobs.progress import job_progress, live_title, progress_text


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
    assert live_title(running_job("batchnorm", 0)) == ("Live: repeat 2 of 3 (evaluating stage one and "
                                                        "re-estimating its BatchNorm statistics)")
    assert live_title(running_job("evaluating", 0)) == "Live: repeat 2 of 3 (evaluating stage one)"


def test_the_cli_and_the_pages_say_the_same_thing():
    job = running_job("stage1", 3)
    job["progress"].update(epoch_seconds={"stage1": [300.0, 3]}, todo=[1, 2],
                           clock={"claimed": 1000.0, "repeat_since": 1000.0}, repeat_epoch_seconds=300.0)
    text = progress_text(job, now=1300.0)
    assert describe_progress(job, now=1300.0) == text and job_progress(job, now=1300.0)[1] == f"running: {text}"
    # 2 stage-one epochs of 100 s and 10 head epochs of 10 s left in this repeat, then repeat 3 (no `between`
    # measured or estimated here): 300 + 600 s
    assert text.endswith("epoch 3 of 5 · 5 min elapsed, at most about 15 min left")
    failed = {"state": "failed", "error": "out of memory", "repeats": 3, "progress": {}}
    assert describe_progress(failed) == "error: out of memory"
    cached = {"state": "done", "repeats": 2, "from_cache": True, "protocol": {"epochs": 4},
              "progress": {"repeats_done": 2}}
    assert describe_progress(cached) == ("2 of 2 repeats stored · 24 of 24 epochs (all from the cache, nothing "
                                         "retrained)")
