"""Deployment settings: normal use, or demo mode for a public host.

Demo mode is on when ``TWO_STAGE_DEMO`` is ``1``/``true`` (or a Streamlit secret of that name is set; the app
copies it into the environment at start-up). It bounds what a visitor can make the server do: small training
subsets, few epochs, one job at a time, a short queue, a submission rate per browser session and one for all
visitors together, and small uploads.

Where each limit is enforced: the pages cap the form's values, uploads (``max_upload_mb``, checked again on the
bytes received) and the per-session rate (in the session's state, so a new tab starts afresh); the job queue
(:class:`core.jobs.queue.JobQueue`) enforces ``max_queued_jobs`` and ``submits_per_hour_total``, counted from the jobs
stored in the cache's queue database, so no number of tabs or sessions gets around them; the image decoder
refuses more than ``max_pixels`` from the file's header.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    demo: bool
    max_train_images: int | None
    max_test_images: int | None
    max_epochs: int
    max_repeats: int
    max_queued_jobs: int | None
    submits_per_hour: int | None
    """Per browser session."""
    submits_per_hour_total: int | None
    """New experiments (jobs that will train) per hour from every visitor together."""
    max_upload_mb: int
    max_pixels: int
    workers: int


NORMAL = Limits(demo=False, max_train_images=None, max_test_images=None, max_epochs=200, max_repeats=100,
                max_queued_jobs=None, submits_per_hour=None, submits_per_hour_total=None, max_upload_mb=50,
                max_pixels=50_000_000,
                workers=int(os.environ.get("TWO_STAGE_WORKERS", "1")))
DEMO = Limits(demo=True, max_train_images=3000, max_test_images=1000, max_epochs=5, max_repeats=3,
              max_queued_jobs=3, submits_per_hour=3, submits_per_hour_total=12, max_upload_mb=5,
              max_pixels=16_000_000, workers=1)


def demo_mode() -> bool:
    return os.environ.get("TWO_STAGE_DEMO", "").strip().lower() in ("1", "true", "yes", "on")


def limits() -> Limits:
    return DEMO if demo_mode() else NORMAL
