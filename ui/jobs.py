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
    from core.app.preview import missing_data
    from core.jobs.submit import submit_and_start
    from core.results.store import StoreError

    queue, why = job_queue()
    if queue is None:
        return None, why
    refused = _rate_limited()
    if refused:
        return None, refused
    problem = missing_data(protocol)
    if problem:
        return None, f"Not queued: {problem}"
    found, _ = job_estimate(protocol, repeats) if sweep is None else (None, "")
    try:
        submitted = submit_and_start(queue, protocol, int(repeats),
                                     sweep=sweep.to_dict() if sweep is not None else None,
                                     estimate=found.parts() if found is not None else None)
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


def failure_text(job: dict[str, Any]) -> str:
    """A failed job's reason for a page. On your own machine the worker's one line; in demo mode, where that
    line can quote a server path, a download URL or a library's message, a plain sentence with the job's id,
    under which the worker's log (``<cache>/jobs/``) keeps the line and its traceback."""
    if limits().demo:
        return (f"This job failed on the server (error id {job.get('id')}); the operator finds the reason in the "
                "worker's log under that id. Try other settings, or a smaller job.")
    return f"Failed: {job.get('error') or 'unknown error'}"


@st.cache_data(show_spinner=False, max_entries=16)
def _split_sizes(dataset: str, path: str | None) -> tuple[dict[str, int] | None, float | None]:
    """The dataset's split sizes, and for a Keras dataset the seconds reading it took here: the page reads the
    arrays a worker will read, so that is a measurement of the job's loading (a folder is only scanned)."""
    from core.app import preview
    from core.protocol.vocabulary import is_keras_dataset

    started = time.perf_counter()
    summary = preview.summarize(dataset, path)
    seconds = time.perf_counter() - started if is_keras_dataset(dataset) else None
    return (summary.sizes() if summary.available else None), seconds


def job_estimate(protocol: Any, repeats: int) -> tuple[Any | None, str]:
    """``(Estimate or None, why there is none)`` for ``repeats`` of ``protocol``: earlier runs' speed
    (:mod:`core.app.estimate`), this queue's measured start-up and loading, this page's reading of the data."""
    from core.app import estimate
    from core.training import env

    sizes, read_seconds = _split_sizes(protocol.dataset, protocol.data_path)
    if sizes is None:
        return None, "No time estimate until the dataset is found."
    queue, _ = job_queue()
    try:
        jobs = queue.jobs() if queue is not None else []
    except Exception:  # noqa: BLE001 - an unreadable queue only means no measured start-up
        jobs = []
    runs = [r for e in experiments() for r in e.runs] + shipped_report_runs()
    found = estimate.estimate(protocol, int(repeats), estimate.limited_sizes(sizes, protocol), runs,
                              device=env.device(), jobs=jobs, loading=read_seconds)
    if found is None:
        return None, (f"No time estimate yet: no stored run of the {protocol.model_id} CNN to measure its speed "
                      "from (a 1-repeat, 1-epoch run on a small subset gives one).")
    return found, ""


@st.cache_data(ttl=600, show_spinner=False)
def shipped_report_runs() -> list[dict[str, Any]]:
    """The related reports' shipped records: measured speeds of this project's CPU for the parts every model
    shares (the second-stage readings), when the records of the job's own CNN predate them."""
    from core.app import reference

    return [r for report_id in ("001", "002", "003", "004") for r in reference.report_runs(report_id)]


def run_estimate(protocol: Any, repeats: int) -> str:
    """One sentence: how long ``repeats`` repeats of ``protocol`` should take at most, part by part, and what
    each part is measured from, or why there is no estimate."""
    found, why = job_estimate(protocol, repeats)
    if found is None:
        return why
    r = found.rates
    first = []
    for part, seconds in (("starting a worker", found.startup), ("loading the data", found.loading)):
        first.append(f"{part} {duration(seconds)}" if seconds is not None else f"{part} (not measured here yet)")
    return (f"Estimated time: at most about {duration(found.seconds)}: {first[0]} and {first[1]}, then "
            f"{duration(found.per_repeat)} per repeat, of which {duration(found.between)} is the work between "
            f"and after the training stages (evaluating, features, the second-stage readings, saving) and the "
            f"rest up to {protocol.epochs} epochs per stage for {found.train_images:,} training images "
            f"(EarlyStopping often ends sooner). Speed from {count_text(r.repeats, 'stored repeat')} of the "
            f"{protocol.model_id} CNN on {r.basis}; start-up and loading as earlier jobs here (or this page) "
            "measured them.")
