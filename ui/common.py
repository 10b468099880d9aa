"""Shared page helpers: the no-traceback guard, cached access to the run store and catalog, and formatting.

Not a page itself: app.py registers the pages explicitly with ``st.navigation``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

import streamlit as st

log = logging.getLogger("two_stage.app")


APP_MARKER = "_two_stage_app_ran"
"""Session-state flag app.py sets on every run, before it routes to a page."""


def ensure_navigation() -> None:
    """Make sure the page runs inside app.py's ``st.navigation``.

    Why: Streamlit runs a process's first script in its legacy multipage mode whenever a ``pages/`` folder
    sits next to the main script, until ``st.navigation`` has been called once in that process. A page opened
    directly on a fresh server (a shared link to ``/results``) then runs alone: no page config, no sidebar,
    legacy navigation. app.py marks every session it ran for (:data:`APP_MARKER`); a page that finds no mark
    runs app.py itself, whose ``st.navigation`` call switches the process to the normal mode and routes to
    this same page (widget state and the URL's query parameters are kept), and stops the stray run. Only
    public APIs are used.
    """
    if st.session_state.get(APP_MARKER):
        return
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent.parent / "app.py"), run_name="__main__")
    st.stop()


def guard(body: Callable[[], None]) -> None:
    """Run a page body; an unexpected error becomes a short message, never a traceback."""
    ensure_navigation()
    try:
        body()
    except Exception as exc:  # noqa: BLE001 - Streamlit's rerun/stop are BaseExceptions and pass through
        log.exception("page error")
        st.error(f"Something went wrong on this page: {type(exc).__name__}: {_short(str(exc))}. "
                 "The rest of the app still works; try again or pick other settings.")


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cache_dir() -> str:
    from core.store import default_cache_dir

    return str(default_cache_dir())


@st.cache_resource(show_spinner=False)
def _store(path: str):
    from core.store import RunStore

    return RunStore(path)


def store():
    """The run store of the current cache directory (``$TWO_STAGE_CACHE`` or ``./cache``)."""
    return _store(cache_dir())


@st.cache_data(ttl=5, show_spinner=False)
def _experiments(path: str):
    from core import catalog

    return catalog.experiments(_store(path))


def experiments():
    """Reference experiments and the user's, re-read at most every few seconds."""
    return _experiments(cache_dir())


@st.cache_data(ttl=5, show_spinner=False)
def _models(path: str):
    from core import catalog

    return catalog.models(_store(path))


def model_choices():
    return _models(cache_dir())


def limits():
    from core.settings import limits as _limits

    return _limits()


def job_queue() -> tuple[Any | None, str | None]:
    """``(JobQueue, None)`` or ``(None, why not)`` while the job layer is not installed."""
    return cached_job_queue()


def pct(value: Any, digits: int = 2) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(v) else f"{100 * v:.{digits}f}%"


def signed_pct(value: Any, digits: int = 2) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(v) else f"{100 * v:+.{digits}f} pp"


def data_path_key(dataset: str) -> str:
    """Session-state key of the folder a user pointed a photo dataset at (shared by Datasets and Train)."""
    return f"data_path::{dataset}"


def data_path(dataset: str) -> str | None:
    value = st.session_state.get(data_path_key(dataset)) or ""
    return value.strip() or None


def curves_figure(history: Any, title: str = ""):
    """Train/validation accuracy and loss per epoch (the paper's Figure 15), from a per-epoch row list or a
    column dict (``{"epoch": [...], "accuracy": [...], ...}``)."""
    import pandas as pd
    from plotly.subplots import make_subplots

    frame = pd.DataFrame(history)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "loss"))
    if frame.empty or "epoch" not in frame:
        fig.update_layout(height=300, title=title or "no epochs yet")
        return fig
    styles = {"accuracy": ("train", "#1f77b4", 1), "val_accuracy": ("validation", "#ff7f0e", 1),
              "loss": ("train", "#1f77b4", 2), "val_loss": ("validation", "#ff7f0e", 2)}
    for column, (name, color, col) in styles.items():
        if column in frame:
            fig.add_scatter(x=frame["epoch"], y=frame[column], mode="lines+markers", name=name,
                            line=dict(color=color), legendgroup=name, showlegend=col == 1, row=1, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1 if len(frame) <= 20 else None)
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=50, b=10), title=title,
                      legend=dict(orientation="h", y=-0.25))
    return fig


@st.cache_resource(show_spinner=False)
def _queue(path: str):
    from core.jobs import JobQueue

    return JobQueue(path)


def cached_job_queue() -> tuple[Any | None, str | None]:
    """The job queue of the current cache (one per process), or ``(None, why not)``."""
    try:
        import core.jobs  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return None, f"The job queue (core.jobs) is not available in this installation ({type(exc).__name__})."
    try:
        return _queue(cache_dir()), None
    except Exception as exc:  # noqa: BLE001
        return None, f"The job queue could not be opened: {_short(str(exc))}"


def duration(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "–"
    if math.isnan(s) or s < 0:
        return "–"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def submit(protocol: Any, repeats: int) -> tuple[str | None, str | None]:
    """Queue an experiment and make sure a worker runs it; ``(job id, None)`` or ``(None, message)``.

    Applies demo mode's per-session submission rate; the queue itself enforces the queued-jobs cap.
    """
    import time

    queue, why = job_queue()
    if queue is None:
        return None, why
    lim = limits()
    recent = [t for t in st.session_state.get("submit_times", []) if time.time() - t < 3600]
    if lim.submits_per_hour is not None and len(recent) >= lim.submits_per_hour:
        return None, (f"Demo mode allows {lim.submits_per_hour} submissions per hour per visitor; "
                      "please wait a little.")
    try:
        job_id = queue.submit(protocol, int(repeats))
    except ValueError as exc:  # includes QueueFull
        return None, f"Not queued: {exc}"
    st.session_state["submit_times"] = recent + [time.time()]
    job = queue.job(job_id) or {}
    if job.get("state") in ("queued", "running"):
        try:
            if not queue.ensure_worker():
                return job_id, "Queued, but no worker could be started; run `python -m core worker`."
        except Exception as exc:  # noqa: BLE001
            return job_id, f"Queued, but starting a worker failed ({type(exc).__name__}: {_short(str(exc))})."
    st.session_state["train_watch"] = job_id
    return job_id, None
