"""Shared page helpers: the no-traceback guard, cached access to the run store and catalog, and formatting.

Not a page itself: app.py registers the pages explicitly with ``st.navigation``.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import uuid
from typing import Any, Callable

import streamlit as st

from core.protocol.vocabulary import TRAINING_STAGES, stage_words
from core.protocol.words import count_text, repeat_name  # noqa: F401 - the pages import them from here

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
    """Run a page body; an unexpected error becomes a short message with an error id, never a traceback.

    Why an id: exception text can name files on the server, so the page shows it only outside demo mode (the
    user's own machine); the full traceback is logged on the server under the same id.
    """
    from core.results.store import StoreError

    ensure_navigation()
    try:
        body()
    except StoreError as exc:  # an unusable cache: its message says what to do
        st.warning(cache_problem(exc))
    except Exception as exc:  # noqa: BLE001 - Streamlit's rerun/stop are BaseExceptions and pass through
        error_id = uuid.uuid4().hex[:8]
        log.exception("page error %s", error_id)
        st.error(f"Something went wrong on this page (error id {error_id}). The rest of the app still works; "
                 "try again or pick other settings.")
        if not limits().demo:
            st.caption(f"Details: {type(exc).__name__}: {_short(str(exc))}")


def cache_problem(exc: Exception) -> str:
    """The line to show for an unusable cache (damaged, read-only, full disk): the store's own message, which
    says how to move a damaged cache aside, or in demo mode, where it would name server paths, a plain line
    with an error id (the details go to the server's log)."""
    if not limits().demo:
        return _short(str(exc), 600)
    error_id = uuid.uuid4().hex[:8]
    log.error("cache problem %s: %s", error_id, exc)
    return (f"The results cache on this server cannot be used right now (error id {error_id}); the operator "
            "finds the details in the server's log.")


def _reference_only(exc: Exception) -> None:
    """Warn that the user's cache could not be read, on pages that go on with the shipped reference alone."""
    st.warning(f"Your cache could not be read, so only the shipped reference results are shown. "
               f"{cache_problem(exc)}", icon=":material/warning:")


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cache_dir() -> str:
    from core.results.store import default_cache_dir

    return str(default_cache_dir())


@st.cache_resource(show_spinner=False)
def _store(path: str):
    from core.results.store import RunStore

    return RunStore(path)


def store():
    """The run store of the current cache directory (``$TWO_STAGE_CACHE`` or ``./cache``).

    Raises :class:`core.results.store.StoreError` with :func:`cache_problem`'s line when the cache cannot be opened;
    pages that list results call :func:`experiments` and :func:`model_choices`, which fall back to the shipped
    reference instead.
    """
    from core.results.store import StoreError

    try:
        return _store(cache_dir())
    except (StoreError, sqlite3.DatabaseError) as exc:
        raise StoreError(cache_problem(exc)) from exc


@st.cache_data(ttl=5, show_spinner=False)
def _experiments(path: str):
    from core.app import catalog

    return catalog.experiments(_store(path))


@st.cache_data(ttl=60, show_spinner=False)
def _reference_experiments(folder: str):
    """The shipped reference alone; ``folder`` (``core.app.reference.REFERENCE_DIR``) keys the cache."""
    from core.app import catalog

    return catalog.experiments(None)


def experiments():
    """Reference experiments and the user's, re-read at most every few seconds. A cache that cannot be read
    (damaged, unreadable) leaves the shipped reference and a warning that says how to move the cache aside."""
    from core.results.store import StoreError

    try:
        return _experiments(cache_dir())
    except (StoreError, sqlite3.DatabaseError) as exc:
        from core.app import reference

        _reference_only(exc)
        return _reference_experiments(str(reference.REFERENCE_DIR))


@st.cache_data(ttl=5, show_spinner=False)
def _models(path: str):
    from core.app import catalog

    return catalog.models(_store(path))


@st.cache_data(ttl=60, show_spinner=False)
def _reference_models(folder: str):
    """Shipped reference model sets alone; ``folder`` keys the cache like :func:`_reference_experiments`."""
    from core.app import catalog

    return catalog.models(None)


def model_choices():
    """Model sets Classify can use; the shipped reference alone (and a warning) when the cache cannot be read."""
    from core.results.store import StoreError

    try:
        return _models(cache_dir())
    except (StoreError, sqlite3.DatabaseError) as exc:
        from core.app import reference

        _reference_only(exc)
        return _reference_models(str(reference.REFERENCE_DIR))


def limits():
    from core.protocol.settings import limits as _limits

    return _limits()


def job_queue() -> tuple[Any | None, str | None]:
    """``(JobQueue, None)``, or ``(None, why not)``: the job layer is not installed, or the queue's database
    cannot be opened (then ``why`` is :func:`cache_problem`'s line, with how to move it aside)."""
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
    from core.jobs.queue import JobQueue

    return JobQueue(path)


def cached_job_queue() -> tuple[Any | None, str | None]:
    """The job queue of the current cache (one per process), or ``(None, why not)``."""
    from core.results.store import StoreError

    try:
        return _queue(cache_dir()), None
    except (StoreError, sqlite3.DatabaseError) as exc:
        return None, cache_problem(exc)
    except Exception:  # noqa: BLE001 - logged with an id; the page says the queue is unavailable
        error_id = uuid.uuid4().hex[:8]
        log.exception("job queue %s", error_id)
        return None, f"The job queue could not be opened (error id {error_id})."


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


def submit(protocol: Any, repeats: int, sweep: Any = None) -> tuple[str | None, str | None]:
    """Queue an experiment (or, with ``sweep``, a sweep over one protocol field as one job) and make sure a
    worker runs it; ``(job id, None)`` or ``(None, message)``.

    Applies demo mode's per-session submission rate; the queue itself enforces the queued-jobs cap and the
    hourly cap for all visitors together (a new tab resets only the per-session count).
    """
    import time

    from core.results.store import StoreError

    queue, why = job_queue()
    if queue is None:
        return None, why
    lim = limits()
    recent = [t for t in st.session_state.get("submit_times", []) if time.time() - t < 3600]
    if lim.submits_per_hour is not None and len(recent) >= lim.submits_per_hour:
        return None, (f"Demo mode allows {lim.submits_per_hour} submissions per hour per visitor; "
                      "please wait a little.")
    try:
        job_id = queue.submit(protocol, int(repeats), sweep=sweep.to_dict() if sweep is not None else None)
    except ValueError as exc:  # includes QueueFull and a sweep value the protocol refuses
        return None, f"Not queued: {exc}"
    except StoreError as exc:  # a read-only or damaged cache
        return None, f"Not queued: {cache_problem(exc)}"
    st.session_state["submit_times"] = recent + [time.time()]
    job = queue.job(job_id) or {}
    if job.get("state") in ("queued", "running"):
        try:
            if not queue.ensure_worker():
                return job_id, "Queued, but no worker could be started; run `python -m core worker`."
        except Exception as exc:  # noqa: BLE001
            error_id = uuid.uuid4().hex[:8]
            log.exception("starting a worker %s", error_id)
            detail = f"error id {error_id}" if limits().demo else f"{type(exc).__name__}: {_short(str(exc))}"
            return job_id, f"Queued, but starting a worker failed ({detail})."
    st.session_state["train_watch"] = job_id
    return job_id, None


# ------------------------------------------------------------------- experiments: ids, labels, deep links

EXPERIMENT_PARAM = "experiment"
"""The query parameter of a deep link to one experiment on the Results page (``/results?experiment=<key>``)."""
REFERENCE_SUFFIX = "-reference"
SHORT_SOURCE = {"reference (shipped with the app)": "shipped reference", "your runs": "your run"}
_LABEL_FIELDS = {"epochs": "{} epochs", "limit": "{:,} training images", "test_limit": "{:,} test images",
                 "patience": "patience {}", "reduce_lr": "ReduceLROnPlateau", "augment": "augmentation {}",
                 "head_init": "{} head", "stage1_eval": "stage one {}", "features_from": "features from {}",
                 "stage2_eval": "stage two {}", "resplit": "new split per repeat", "precision": "{}",
                 "engine": "{} engine", "batch_size": "batch {}", "sgd_momentum": "momentum {}", "seed": "seed {}"}


def experiment_id(exp: Any, exps: list[Any]) -> str:
    """The value of ``?experiment=`` for ``exp``: its protocol key, with ``-reference`` added when the shipped
    reference and the user's cache both hold that key (a bundle keeps the key of the run it came from)."""
    from core.app.catalog import REFERENCE

    twins = [e for e in exps if e.key == exp.key]
    return f"{exp.key}{REFERENCE_SUFFIX}" if len(twins) > 1 and exp.source == REFERENCE else exp.key


def find_experiment(exps: list[Any], wanted: str | None) -> Any | None:
    """The experiment a deep link names: an exact id first, else the experiment with that key and the most
    repeats (a link made before a reference bundle of the same key existed still opens something)."""
    if not wanted:
        return None
    exact = [e for e in exps if experiment_id(e, exps) == wanted]
    if exact:
        return exact[0]
    key = wanted.removesuffix(REFERENCE_SUFFIX)
    same = [e for e in exps if e.key == key]
    return max(same, key=lambda e: len(e.runs)) if same else None


def protocol_summary(protocol: Any) -> str:
    """What sets a protocol apart from the paper's for its dataset, in a few words ("paper protocol" if
    nothing does); the full protocol goes in a caption."""
    from core.protocol.config import Protocol

    base = Protocol(dataset=protocol.dataset, data_path=protocol.data_path).to_dict()
    mine = protocol.to_dict()
    parts = []
    for name, template in _LABEL_FIELDS.items():
        value = mine.get(name)
        if value == base.get(name) or value is None:
            continue
        if isinstance(value, bool):
            parts.append(template.format("on" if value else "off") if "{}" in template
                         else (template if value else f"no {template}"))
        else:
            parts.append(template.format(value))
    return ", ".join(parts) or "paper protocol"


def experiment_label(exp: Any) -> str:
    """A short selectbox label: repeats, where it comes from, what differs from the paper, when."""
    when = max(r["finished_at"] for r in exp.runs)[:10]
    return (f"{count_text(len(exp.runs), 'repeat')} · {SHORT_SOURCE.get(exp.source, exp.source)} · "
            f"{protocol_summary(exp.protocol)} · {when}")


def results_link(key: str | None, label: str, icon: str = ":material/table_chart:") -> None:
    """A link to the Results page that opens experiment ``key`` (a deep link), or the page as it is."""
    st.page_link("pages/results.py", label=label, icon=icon,
                 query_params={EXPERIMENT_PARAM: key} if key else None)


def p_text(p: Any) -> str:
    """A p-value for reading: four decimals, scientific below 0.0001, a dash when it cannot be computed."""
    try:
        v = float(p)
    except (TypeError, ValueError):
        return "–"
    if math.isnan(v):
        return "–"
    return f"{v:.2e}" if v < 1e-4 else f"{v:.4f}"


# ------------------------------------------------------------------------------- run-time estimates

@st.cache_data(show_spinner=False, max_entries=16)
def _split_sizes(dataset: str, path: str | None) -> dict[str, int] | None:
    from core.app import preview

    summary = preview.summarize(dataset, path)
    return summary.sizes() if summary.available else None


def run_estimate(protocol: Any, repeats: int) -> str:
    """One sentence: how long ``repeats`` repeats of ``protocol`` should take at most, and what that is
    based on (the measured speed in stored records of the same CNN), or why there is no estimate."""
    from core.training import env
    from core.app import estimate

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


# ------------------------------------------------------------------------------------ job progress

def job_progress(job: dict[str, Any]) -> tuple[float, str]:
    """A job's progress as a fraction and one line, counted in epochs across all repeats and stages.

    Each repeat has three stages of up to ``epochs`` epochs; a stage that EarlyStopping ended early counts as
    its full budget once the next stage starts, so the bar moves steadily and ends at 100%.
    """
    prog = job.get("progress") or {}
    state = job.get("state", "?")
    repeats = max(1, int(job.get("repeats") or 1))
    done = min(int(prog.get("repeats_done") or 0), repeats)
    epochs = max(1, int((job.get("protocol") or {}).get("epochs") or prog.get("epochs") or 1))
    total = 3 * epochs * repeats
    stage, epoch = prog.get("stage"), int(prog.get("epoch") or 0)
    within = 0
    if state == "running" and done < repeats:
        within = {"stage1": epoch, "batchnorm": epochs, "features": epochs, "stage2_adam": epochs + epoch,
                  "stage2_sgd": 2 * epochs + epoch}.get(stage, 0)
    count = total if state == "done" else min(total, done * 3 * epochs + within)
    text = f"{state}: {done} of {count_text(repeats, 'repeat')} stored · {count} of {total} epochs"
    if state == "running":
        text += f" · now {repeat_name(prog.get('repeat') or 0)}"
        if stage:
            text += f", {stage_words(stage)}"
        if stage in TRAINING_STAGES and epoch:
            text += f", epoch {epoch} of {prog.get('epochs') or epochs}"
        if prog.get("eta_seconds") is not None:
            text += f" · at most {duration(prog['eta_seconds'])} left"
    return count / total, text


def live_title(job: dict[str, Any]) -> str:
    """"Live: repeat 2 of 3, stage two, Adam head" while a stage trains; the step in words between stages
    (never a half-filled "Live: repeat 1, repeat")."""
    prog = job.get("progress") or {}
    where = f"Live: {repeat_name(prog.get('repeat') or 0)} of {job.get('repeats') or 1}"
    stage = prog.get("stage")
    if stage in TRAINING_STAGES:
        return f"{where}, {stage_words(stage)}"
    return f"{where} ({stage_words(stage)})" if stage else where
