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


# ------------------------------------------------------------------------------------ the server process

SERVER_ENVIRONMENT = {"TF_ENABLE_ONEDNN_OPTS": "0"}
"""Defaults the app's server sets for itself before TensorFlow loads, and hands to no training worker.

``TF_ENABLE_ONEDNN_OPTS=0``: with oneDNN's kernels on, TensorFlow allocates through oneDNN's allocator, which
keeps freed buffers: loading the shipped Dogs & Cats CNN left 138 MB resident that way and 57 MB without, on a
server that must fit a small host (docs/reference.md, the hosted demo). The server only classifies single photos
(14.6 ms instead of 9.3 ms each). Workers it starts train with the kernels the command line uses, so a job's
numbers do not depend on where it was submitted."""
SERVER_SET = "TWO_STAGE_SERVER_SET"
"""Names of the :data:`SERVER_ENVIRONMENT` variables the server set itself (a user's own setting stays)."""


def apply_server_environment() -> None:
    """Set each :data:`SERVER_ENVIRONMENT` default the environment lacks, remembering which were set here.
    Called on every run of ``app.py``: a later run finds its own earlier settings and keeps them marked."""
    set_here = set(filter(None, os.environ.get(SERVER_SET, "").split(",")))
    for name in SERVER_ENVIRONMENT:
        if name not in os.environ:
            os.environ[name] = SERVER_ENVIRONMENT[name]
            set_here.add(name)
    os.environ[SERVER_SET] = ",".join(sorted(set_here))


def worker_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the server's own defaults: what a training worker the server starts runs with."""
    set_here = set(filter(None, env.get(SERVER_SET, "").split(",")))
    return {name: value for name, value in env.items() if name not in set_here and name != SERVER_SET}
