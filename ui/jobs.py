"""The job queue as the pages use it: one queue per process, submitting with demo mode's per-visitor rate, and
a run-time estimate before submitting. Progress in words is :mod:`core.jobs.progress`'s, queueing
:func:`core.jobs.submit.submit_and_start`'s; this module adds only what needs a browser session."""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from typing import Any

import streamlit as st

from core.protocol.words import count_text, duration
from ui.common import cache_dir, cache_problem, experiments, limits
from ui.format import short

log = logging.getLogger("two_stage.app")

SUBMIT_TIMES = "submit_times"
"""Session-state key: when this visitor submitted (demo mode's per-session rate)."""
WATCH_KEY = "train_watch"
"""Session-state key of the job the Train page follows; a submission makes it the new job."""


@st.cache_resource(show_spinner=False)
def _queue(path: str):
    from core.jobs.queue import JobQueue

    return JobQueue(path)


def job_queue() -> tuple[Any | None, str | None]:
    """``(JobQueue, None)`` for the current cache (one per process), or ``(None, why not)``: the queue's
    database cannot be opened (then ``why`` is :func:`ui.common.cache_problem`'s line, with how to move it
    aside) or something else went wrong (logged with an id)."""
    from core.results.store import StoreError

    try:
        return _queue(cache_dir()), None
    except (StoreError, sqlite3.DatabaseError) as exc:
        return None, cache_problem(exc)
    except Exception:  # noqa: BLE001 - logged with an id; the page says the queue is unavailable
        error_id = uuid.uuid4().hex[:8]
        log.exception("job queue %s", error_id)
        return None, f"The job queue could not be opened (error id {error_id})."


def _rate_limited() -> str | None:
    """Demo mode's per-session submission rate: the line to show when this visitor has used it up."""
    per_hour = limits().submits_per_hour
    recent = [t for t in st.session_state.get(SUBMIT_TIMES, []) if time.time() - t < 3600]
    st.session_state[SUBMIT_TIMES] = recent
    if per_hour is not None and len(recent) >= per_hour:
        return f"Demo mode allows {per_hour} submissions per hour per visitor; please wait a little."
    return None


def submit(protocol: Any, repeats: int, sweep: Any = None) -> tuple[str | None, str | None]:
    """Queue an experiment (or, with ``sweep``, a sweep over one protocol field as one job) and make sure a
    worker runs it; ``(job id, None)`` or ``(None or job id, message)``.

    Applies demo mode's per-session submission rate; the queue itself enforces the queued-jobs cap and the
    hourly cap for all visitors together (a new tab resets only the per-session count).
    """
    from core.jobs.submit import submit_and_start
    from core.results.store import StoreError

    queue, why = job_queue()
    if queue is None:
        return None, why
    refused = _rate_limited()
    if refused:
        return None, refused
    try:
        submitted = submit_and_start(queue, protocol, int(repeats),
                                     sweep=sweep.to_dict() if sweep is not None else None)
    except ValueError as exc:  # includes QueueFull and a sweep value the protocol refuses
        return None, f"Not queued: {exc}"
    except StoreError as exc:  # a read-only or damaged cache
        return None, f"Not queued: {cache_problem(exc)}"
    st.session_state[SUBMIT_TIMES].append(time.time())
    st.session_state[WATCH_KEY] = submitted.job_id
    if submitted.worker == "none":
        return submitted.job_id, "Queued, but no worker could be started; run `python -m core worker`."
    if submitted.worker == "failed":
        error_id = uuid.uuid4().hex[:8]
        log.error("starting a worker %s", error_id, exc_info=submitted.error)
        exc = submitted.error
        detail = f"error id {error_id}" if limits().demo else f"{type(exc).__name__}: {short(str(exc))}"
        return submitted.job_id, f"Queued, but starting a worker failed ({detail})."
    return submitted.job_id, None


@st.cache_data(show_spinner=False, max_entries=16)
def _split_sizes(dataset: str, path: str | None) -> dict[str, int] | None:
    from core.app import preview

    summary = preview.summarize(dataset, path)
    return summary.sizes() if summary.available else None


def run_estimate(protocol: Any, repeats: int) -> str:
    """One sentence: how long ``repeats`` repeats of ``protocol`` should take at most, and what that is
    based on (the measured speed in stored records of the same CNN), or why there is no estimate."""
    from core.app import estimate
    from core.training import env

    sizes = _split_sizes(protocol.dataset, protocol.data_path)
    if sizes is None:
        return "No time estimate until the dataset is found."
    split = estimate.limited_sizes(sizes, protocol)
    runs = [r for e in experiments() for r in e.runs]
    found = estimate.estimate(protocol, int(repeats), split, runs, device=env.device())
    if found is None:
        return (f"No time estimate yet: no stored run of the {protocol.model_id} CNN to measure its speed from "
                "(a 1-repeat, 1-epoch run on a small subset gives one).")
    r = found.rates
    return (f"Estimated time: at most about {duration(found.seconds)} ({duration(found.per_repeat)} per repeat "
            f"for {split['train']:,} training images and up to {protocol.epochs} epochs per stage; EarlyStopping "
            f"often ends sooner), from the measured speed of {count_text(r.repeats, 'stored repeat')} of the "
            f"{protocol.model_id} CNN on {r.basis}; loading the data and starting a worker come on top.")
