"""Shared page helpers: the no-traceback guard, cached access to the run store and catalog, the deployment's
limits and the data folders a visitor pointed at. Formatting is :mod:`ui.format`, the job queue :mod:`ui.jobs`,
links to an experiment :mod:`ui.experiments`, figures :mod:`ui.charts`.

Not a page itself: app.py registers the pages explicitly with ``st.navigation``.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from typing import Callable

import streamlit as st

from ui.format import short

log = logging.getLogger("two_stage.app")


def guard(body: Callable[[], None]) -> None:
    """Run a page body; an unexpected error becomes a short message with an error id, never a traceback.

    Why an id: exception text can name files on the server, so the page shows it only outside demo mode (the
    user's own machine); the full traceback is logged on the server under the same id.
    """
    from core.results.store import StoreError

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
            st.caption(f"Details: {type(exc).__name__}: {short(str(exc))}")


def unexpected(exc: Exception, what: str) -> str:
    """The line for an unexpected error in one part of a page (``what``: "Could not read the queue right now"):
    logged on the server with an id; its text shown only outside demo mode, where it could name server paths,
    URLs or internals a visitor should not see."""
    error_id = uuid.uuid4().hex[:8]
    log.error("%s (error id %s)", what, error_id, exc_info=exc)
    if limits().demo:
        return f"{what} (error id {error_id}; the operator finds the details in the server's log)."
    return f"{what} ({type(exc).__name__}: {short(str(exc))})."


def cache_problem(exc: Exception) -> str:
    """The line to show for an unusable cache (damaged, read-only, full disk): the store's own message, which
    says how to move a damaged cache aside, or in demo mode, where it would name server paths, a plain line
    with an error id (the details go to the server's log)."""
    if not limits().demo:
        return short(str(exc), 600)
    error_id = uuid.uuid4().hex[:8]
    log.error("cache problem %s: %s", error_id, exc)
    return (f"The results cache on this server cannot be used right now (error id {error_id}); the operator "
            "finds the details in the server's log.")


def _reference_only(exc: Exception) -> None:
    """Warn that the user's cache could not be read, on pages that go on with the shipped reference alone."""
    st.warning(f"Your cache could not be read, so only the shipped reference results are shown. "
               f"{cache_problem(exc)}", icon=":material/warning:")


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


@st.cache_data(ttl=60, show_spinner=False)
def _report_experiments(report_id: str, folder: str):
    from core.app import catalog

    return catalog.report_experiments(report_id)


def report_experiments(report_id: str):
    """A related report's small-plan experiments shipped in ``reference/reports/`` (read at most once a
    minute; the folder keys the cache like :func:`_reference_experiments`)."""
    from core.app import reference

    return _report_experiments(report_id, str(reference.REFERENCE_DIR))


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


FOLDER_HINTS = {"fashion-mnist": "optional: else /usr/share/datasets/fashion-mnist or Keras' cache",
                "cifar10": "optional: cifar-10-python.tar.gz, its batches folder or a CIFAR-10 images folder",
                "dogs-cats": "/data/cat-and-dog (training_set/ and test_set/)",
                "face-mask": "/data/face-mask-detection (with_mask/, without_mask/, ...)",
                "folder": "/data/my-images (one sub-folder per class)"}
"""The data folder box's placeholder per dataset: what that dataset's folder looks like."""


def data_folder_box(dataset: str, container=None) -> str | None:
    """The data folder box for ``dataset`` (one session key per dataset, shared by Datasets, Train and Related
    reports, so a folder given on one page holds on the others) and its value; in demo mode no box, since
    visitors may not point at the server's folders."""
    from core.data.datasets import HOW_TO_GET
    from core.protocol.vocabulary import is_keras_dataset

    if limits().demo:
        return None
    label = ("Data folder or archive (optional)" if is_keras_dataset(dataset)
             else "Data folder (class sub-folders, or training_set/ + test_set/)")
    (container or st).text_input(label, key=data_path_key(dataset), placeholder=FOLDER_HINTS.get(dataset, ""),
                                 help=HOW_TO_GET.get(dataset))
    return data_path(dataset)


def data_path_key(dataset: str) -> str:
    """Session-state key of the folder a user pointed a photo dataset at (shared by Datasets and Train)."""
    return f"data_path::{dataset}"


def data_path(dataset: str) -> str | None:
    value = st.session_state.get(data_path_key(dataset)) or ""
    return value.strip() or None
