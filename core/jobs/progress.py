"""A job's progress in words and as a fraction: the one text the Train page, the Overview's quick run and the
CLI's ``jobs``/``watch`` show.

While a job runs its fraction is time, not epochs: elapsed / (elapsed + time left), both from the parts of the
job measured as it runs (:mod:`core.jobs.live`), so stage one, which takes most of the time, takes most of the
bar, and the work between stages moves it too. Until the time left is known (no stage-one epoch timed, no
estimate stored with the job) it counts epochs across all repeats and stages; a stage that EarlyStopping ended
early counts as its full budget once the next stage starts.
"""

from __future__ import annotations

import time
from typing import Any

from ..protocol.events import JobProgress
from ..protocol.vocabulary import TRAINING_STAGES, stage_words
from ..protocol.words import count_text, duration, repeat_name
from .live import elapsed, fraction_done, time_left

_WITHIN = {"stage1": (0, 1), "batchnorm": (1, 0), "evaluating": (1, 0), "features": (1, 0),
           "stage2_adam": (1, 1), "stage2_sgd": (2, 1)}
"""A stage -> (full stage budgets already behind it, whether its own epoch counts)."""


def _budget(job: dict[str, Any]) -> int:
    """Epochs per stage: the protocol's budget."""
    prog: JobProgress = job.get("progress") or {}
    return max(1, int((job.get("protocol") or {}).get("epochs") or prog.get("epochs") or 1))


def epochs_counted(job: dict[str, Any]) -> tuple[int, int]:
    """``(epochs done, epochs in all)`` of a job, counted as the module docstring says."""
    prog: JobProgress = job.get("progress") or {}
    state = job.get("state", "?")
    repeats = max(1, int(job.get("repeats") or 1))
    done = min(int(prog.get("repeats_done") or 0), repeats)
    epochs = _budget(job)
    total = 3 * epochs * repeats
    if state == "done":
        return total, total
    within = 0
    if state == "running" and done < repeats:
        behind, counts = _WITHIN.get(str(prog.get("stage")), (0, 0))
        within = behind * epochs + counts * int(prog.get("epoch") or 0)
    return min(total, done * 3 * epochs + within), total


def progress_text(job: dict[str, Any], now: float | None = None) -> str:
    """"1 of 2 repeats stored · 40 of 72 epochs · now repeat 2, stage two, Adam head, epoch 4 of 12 · 2 min
    elapsed, at most about 1 min left": where a job stands, without its state."""
    now = time.time() if now is None else now
    prog: JobProgress = job.get("progress") or {}
    repeats = max(1, int(job.get("repeats") or 1))
    done = min(int(prog.get("repeats_done") or 0), repeats)
    count, total = epochs_counted(job)
    text = f"{done} of {count_text(repeats, 'repeat')} stored · {count} of {total} epochs"
    state = job.get("state")
    if state == "running":
        stage, epoch = prog.get("stage"), int(prog.get("epoch") or 0)
        text += f" · now {repeat_name(prog.get('repeat') or 0)}"
        if stage:
            text += f", {stage_words(stage)}"
        if stage in TRAINING_STAGES and epoch:
            text += f", epoch {epoch} of {prog.get('epochs') or _budget(job)}"
        text += f" · {duration(elapsed(job, now))} elapsed"
        left = time_left(dict(prog), now)
        if left is not None:
            text += f", at most about {duration(left)} left"
    elif state in ("done", "failed", "cancelled") and not job.get("from_cache"):
        spent = elapsed(job, now)
        if spent:
            text += f" · took {duration(spent)}"
    return text


def job_progress(job: dict[str, Any], now: float | None = None) -> tuple[float, str]:
    """A job's progress as a fraction (by time while it runs: :func:`core.jobs.live.fraction_done`) and one
    line that starts with its state."""
    count, total = epochs_counted(job)
    by_time = fraction_done(job, now)
    fraction = count / total if by_time is None else by_time
    return min(1.0, max(0.0, fraction)), f"{job.get('state', '?')}: {progress_text(job, now)}"


def live_title(job: dict[str, Any]) -> str:
    """"Live: repeat 2 of 3, stage two, Adam head" while a stage trains; the step in words between stages
    (never a half-filled "Live: repeat 1, repeat")."""
    prog: JobProgress = job.get("progress") or {}
    where = f"Live: {repeat_name(prog.get('repeat') or 0)} of {job.get('repeats') or 1}"
    stage = prog.get("stage")
    if stage in TRAINING_STAGES:
        return f"{where}, {stage_words(stage)}"
    return f"{where} ({stage_words(stage)})" if stage else where
