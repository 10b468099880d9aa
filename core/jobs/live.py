"""A job's progress as its worker's events arrive: the live curve, what each part of the job took, the time left.

Why measured parts, not epochs alone: a job is more than its epochs. Starting a worker (a fresh Python that
imports TensorFlow), loading the data, and each repeat's work between and after its training stages (evaluating
stage one, re-estimating BatchNorm, extracting features, the second-stage readings, saving the models) took
most of a quick run whose epochs took well under a minute, so a time left counted in epochs was beaten
several-fold and a bar counted in epochs stalled for a third of the run. So the queue stamps, on the wall clock,
when each part starts (``progress["clock"]``) and keeps what each part took (``progress["measured"]``):

- ``startup``: from the job being queued to its first event, measured only when no job was ahead of it;
- ``loading``: from the ``loading`` event to the first repeat's start;
- ``between``: ``[total, n]`` over the repeats followed here, each its wall time less its epochs;
- ``epoch_seconds``: ``[total, n]`` per stage group (``stage1``, ``stage2``).

:func:`time_left` adds, for every part still to come, this job's own measurement of it, or before there is one
the estimate stored with the job when it was queued (``progress["estimate"]``: :mod:`core.app.estimate`'s parts).
:func:`fraction_done` is elapsed / (elapsed + left), so the bar moves with time: stage one, which takes most of
it, takes most of the bar, and the pauses between stages move it too.

Everything here is pure (``now`` is a parameter) so a test can replay a job's events at chosen times.
"""

from __future__ import annotations

import time
from typing import Any, cast

from ..protocol.events import EpochEvent, JobProgress, PlanEvent, ProgressEvent, ResumedEvent, event_kind

HISTORY_KEYS = ("epoch", "accuracy", "val_accuracy", "loss", "val_loss")


def apply_event(progress: JobProgress, event: ProgressEvent, attempt: int = 1, now: float | None = None) -> None:
    """Fold one event into a job's ``progress`` dict (the worker and tests call it).

    Events are ``run_repeat``'s (``stage`` + ``epoch``/``epochs``/``logs``, ``resumed_at_epoch``,
    ``features``) plus the worker's own (``plan``, ``loading``, ``repeat``, ``stored``), each with ``repeat``.
    ``history`` holds the current stage's epochs; on a resume it is cut back to the epochs the restored weights
    have seen, so it matches the record that will be stored.

    The live fields (``repeat``, ``stage``, ``epoch``, ``history``) follow one repeat, the lowest of those
    training here and not yet stored: where several repeats train at once (the lock-step engine, Ray tasks)
    their interleaved events would otherwise make the live curve restart at every event. The others still
    count when they are stored.
    """
    now = time.time() if now is None else now
    p: dict[str, Any] = cast(dict, progress)
    stage, kind = event.get("stage"), event_kind(event)
    _note_start(p, now)
    if kind != "loading":
        _end_loading(p, event, now)
    if "repeat" in event and kind not in ("plan", "stored", "waiting"):
        training = p.setdefault("training", [])
        if event["repeat"] not in training:
            training.append(event["repeat"])
    if kind != "plan" and not _followed(p, event):
        if kind == "stored":
            _count_stored(p, event["repeat"])
            p["eta_seconds"] = time_left(p, now)
        return
    if "repeat" in event:
        if event["repeat"] != p.get("repeat"):
            p["history"] = []
        p["repeat"] = event["repeat"]
    if kind == "plan":
        plan = cast(PlanEvent, event)
        p.update(todo=list(plan["todo"]), repeats=plan["repeats"], repeats_done=plan["repeats_done"])
    elif kind == "stored":
        _measure_repeat(p, now)
        _count_stored(p, event["repeat"])
        _set_stage(p, "stored", now)
        p["epoch"] = 0
    elif kind == "resumed":
        done = int(cast(ResumedEvent, event)["resumed_at_epoch"])
        if p.get("stage") != stage:
            p["history"] = []
        p["history"] = [row for row in p.get("history", []) if row["epoch"] <= done]
        p.setdefault("resumed", []).append({"repeat": p.get("repeat"), "stage": stage, "epoch": done,
                                            "attempt": attempt})
        _set_stage(p, stage, now)
        p["epoch"] = done
    elif kind == "epoch":
        _fold_epoch(p, cast(EpochEvent, event), now)
    elif stage:
        _fold_step(p, event, now)
    p["eta_seconds"] = time_left(p, now)


def _fold_epoch(p: dict[str, Any], epoch: EpochEvent, now: float) -> None:
    stage = epoch["stage"]
    if p.get("stage") != stage:
        p["history"] = []
    logs = epoch.get("logs", {})
    row = {k: logs[k] for k in HISTORY_KEYS if k in logs}
    row["epoch"] = epoch["epoch"]
    p["history"] = [r for r in p.get("history", []) if r["epoch"] < epoch["epoch"]] + [row]
    _set_stage(p, stage, now)
    p.update(epoch=epoch["epoch"], epochs=epoch["epochs"], logs=logs)
    seconds = float(logs.get("seconds", 0.0))
    group = "stage1" if stage == "stage1" else "stage2"
    total, n = p.setdefault("epoch_seconds", {}).get(group, [0.0, 0])
    p["epoch_seconds"][group] = [total + seconds, n + 1]
    p["repeat_epoch_seconds"] = p.get("repeat_epoch_seconds", 0.0) + seconds
    p.setdefault("repeat_epochs", {})[group] = p.get("repeat_epochs", {}).get(group, 0) + 1


def _fold_step(p: dict[str, Any], event: dict[str, Any], now: float) -> None:
    """A step that is not an epoch: loading, a repeat's start, BatchNorm, features."""
    stage = str(event["stage"])
    clock = p.setdefault("clock", {})
    if stage == "loading":
        clock["loading_since"] = now
    elif stage == "repeat":
        clock["repeat_since"] = now
        p.update(repeat_epoch_seconds=0.0, repeat_epochs={}, epoch=0)
    elif stage == "batchnorm" and not event.get("layers"):
        stage = "evaluating"  # a CNN without BatchNorm re-estimates nothing: stage one is being evaluated
    _set_stage(p, stage, now)


def _set_stage(p: dict[str, Any], stage: Any, now: float) -> None:
    if p.get("stage") != stage:
        p.setdefault("clock", {})["stage_since"] = now
    p["stage"] = stage


def _note_start(p: dict[str, Any], now: float) -> None:
    """The job's first event ends its start-up: measured when nothing was queued ahead of it."""
    clock = p.setdefault("clock", {})
    if "first_event" in clock:
        return
    clock["first_event"] = now
    if clock.get("ahead") == 0 and "queued" in clock:
        p.setdefault("measured", {})["startup"] = max(0.0, now - clock["queued"])


def _end_loading(p: dict[str, Any], event: dict[str, Any], now: float) -> None:
    """The first event after ``loading`` ends it (less the epoch that event reports, if it is one); the repeat
    that asked for the data starts its own clock then, so its wall time does not count the loading."""
    clock = p.get("clock", {})
    since = clock.get("loading_since")
    if since is None or "loading" in p.get("measured", {}):
        return
    ended = max(since, now - float((event.get("logs") or {}).get("seconds", 0.0)))
    p.setdefault("measured", {})["loading"] = ended - since
    if clock.get("repeat_since", ended) <= since:
        clock["repeat_since"] = ended


def _measure_repeat(p: dict[str, Any], now: float) -> None:
    """A followed repeat is stored: its wall time less its epochs is one measurement of ``between``."""
    since = p.get("clock", {}).get("repeat_since")
    if since is None:
        return
    between = max(0.0, now - since - p.get("repeat_epoch_seconds", 0.0))
    total, n = p.setdefault("measured", {}).get("between", [0.0, 0])
    p["measured"]["between"] = [total + between, n + 1]
    p["clock"].pop("repeat_since", None)


def durable(progress: dict[str, Any]) -> int:
    """Stored repeats plus finished stage-one epochs so far: the progress a resumed worker keeps (stage-one
    epochs are checkpointed). A worker that died after adding to it was not killed by its job."""
    return progress.get("repeats_done", 0) + progress.get("epoch_seconds", {}).get("stage1", [0.0, 0])[1]


def _count_stored(progress: dict[str, Any], repeat: int) -> None:
    progress["repeats_done"] = progress.get("repeats_done", 0) + 1
    progress["todo"] = [r for r in progress.get("todo", []) if r != repeat]
    progress["training"] = [r for r in progress.get("training", []) if r != repeat]


def _followed(progress: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether ``event`` is about the repeat the live view follows (see :func:`apply_event`)."""
    training = progress.get("training") or []
    return "repeat" not in event or not training or event["repeat"] == min(training)


# -------------------------------------------------------------------------------------- claims and releases

def note_queued(progress: dict[str, Any], now: float, ahead: int, estimate: dict[str, Any] | None) -> None:
    """At submission: when the job was queued, how many jobs were ahead of it, and its estimate's parts."""
    progress["clock"] = {"queued": now, "ahead": ahead}
    if estimate:
        progress["estimate"] = {k: float(v) for k, v in estimate.items() if v is not None}


def note_claim(job: dict[str, Any], now: float) -> None:
    """A worker took the job: its active time runs from now (earlier attempts' time is kept apart)."""
    job["progress"].setdefault("clock", {})["claimed"] = now


def note_release(job: dict[str, Any], until: float) -> None:
    """The job left its worker (handed back, or its worker died; ``until`` its last sign of life): the time it
    was active is kept, so the elapsed time a person reads does not count the wait in the queue."""
    clock = job["progress"].setdefault("clock", {})
    claimed = clock.pop("claimed", None)
    if claimed is not None:
        clock["active_before"] = clock.get("active_before", 0.0) + max(0.0, until - claimed)


# -------------------------------------------------------------------------------------------- time left

def _mean(pair: Any) -> float | None:
    total, n = pair if pair else (0.0, 0)
    return total / n if n else None


def _parts(p: dict[str, Any]) -> dict[str, float] | None:
    """Seconds of one stage-one epoch, one head epoch, the work between stages per repeat and loading: this
    job's measurements where it has them, else its estimate's; None while stage one's speed is unknown."""
    measured, estimate = p.get("measured", {}), p.get("estimate", {})
    seconds = p.get("epoch_seconds", {})
    stage1 = _mean(seconds.get("stage1")) or estimate.get("stage1_epoch")
    if not stage1:
        return None
    head = _mean(seconds.get("stage2")) or estimate.get("head_epoch") or stage1 / 10
    between = _mean(measured.get("between"))
    return {"stage1": stage1, "head": head,
            "between": between if between is not None else float(estimate.get("between", 0.0)),
            "loading": float(measured.get("loading", estimate.get("loading", 0.0))),
            "startup": float(measured.get("startup", estimate.get("startup", 0.0)))}


def time_left(progress: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds left: the rest of the followed repeat, every repeat still to do, and start-up and loading while
    they are ahead; None until a stage-one epoch has been timed and no estimate was stored with the job.

    An upper bound on the epochs (every stage is assumed to run its whole budget; EarlyStopping often ends
    sooner), measured for everything else.
    """
    now = time.time() if now is None else now
    p = progress
    parts = _parts(p)
    if parts is None:
        return None
    epochs = int(p.get("epochs") or 0)
    full = epochs * parts["stage1"] + parts["between"] + 2 * epochs * parts["head"]
    stage, epoch = str(p.get("stage") or ""), int(p.get("epoch") or 0)
    clock = p.get("clock", {})
    todo = list(p.get("todo", []))
    if stage in ("", "queued", "plan", "loading", "stored") or stage.startswith(("queued", "requeued")):
        if not todo and stage != "stored":
            todo = list(range(int(p.get("repeats") or 1) - int(p.get("repeats_done") or 0)))
        return _ahead_of_repeats(p, parts, stage, now) + len(todo) * full
    heads_done = p.get("repeat_epochs", {}).get("stage2", 0)
    stage1_left, heads_left = {
        "repeat": (epochs, 2 * epochs), "stage1": (epochs - epoch, 2 * epochs),
        "stage2_adam": (0, 2 * epochs - epoch), "stage2_sgd": (0, epochs - epoch),
    }.get(stage, (0, 2 * epochs - heads_done))
    in_between = max(0.0, now - clock.get("repeat_since", now) - p.get("repeat_epoch_seconds", 0.0))
    current = (max(0, stage1_left) * parts["stage1"] + max(0, heads_left) * parts["head"]
               + max(0.0, parts["between"] - in_between))
    return current + len([r for r in todo if r != p.get("repeat")]) * full


def _ahead_of_repeats(p: dict[str, Any], parts: dict[str, float], stage: str, now: float) -> float:
    """Start-up and loading still ahead of a job's next repeat (a requeued job starts and loads again)."""
    clock = p.get("clock", {})
    if "first_event" not in clock or stage.startswith(("queued", "requeued")):
        return parts["startup"] + parts["loading"]
    if stage == "loading":
        return max(0.0, parts["loading"] - (now - clock.get("loading_since", now)))
    return 0.0


def elapsed(job: dict[str, Any], now: float | None = None) -> float:
    """Seconds a job has been worked on: its earlier attempts and its current (or last) one, not the wait in
    the queue."""
    now = time.time() if now is None else now
    clock = (job.get("progress") or {}).get("clock", {})
    active = float(clock.get("active_before", 0.0))
    if clock.get("claimed") is not None:
        end = now if job.get("state") == "running" else float(job.get("finished") or now)
        active += max(0.0, end - clock["claimed"])
    return active


def fraction_done(job: dict[str, Any], now: float | None = None) -> float | None:
    """Elapsed / (elapsed + left) for a running job with a known time left, else None (count epochs instead)."""
    if job.get("state") != "running":
        return None
    left = time_left(job.get("progress") or {}, now)
    if left is None:
        return None
    spent = elapsed(job, now)
    return spent / (spent + left) if spent + left > 0 else None
