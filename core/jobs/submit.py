"""Queue an experiment and make sure a worker will run it: the one way the CLI (``submit``, ``report --submit``,
``sweep --submit``) and the app's pages (Train, the Overview's quick run, Related reports) start work.

Each caller says the outcome its own way (lines on stderr, a message on the page) from the :class:`Submitted`
this returns; what happens is the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..protocol.config import Protocol
    from .queue import JobQueue

WorkerState = Literal["not needed", "running", "started", "none", "failed"]
"""``not needed``: the job is finished already (every repeat stored) or no worker was asked for; ``running``:
a live worker will pick it up; ``started``: one was started here; ``none``: none runs and none could start;
``failed``: starting one raised (:attr:`Submitted.error`)."""


@dataclass(frozen=True)
class Submitted:
    job_id: str
    job: dict[str, Any]
    """The job as queued (``state`` is ``done`` at once when every repeat is already stored)."""
    worker: WorkerState
    error: Exception | None = None
    """Why starting a worker failed; the job stays queued for a worker started by hand."""


def submit_and_start(queue: JobQueue, protocol: Protocol, repeats: int, *, start_worker: bool = True,
                     **options: Any) -> Submitted:
    """Queue ``repeats`` of ``protocol`` (``options``: :meth:`JobQueue.submit`'s ``executor``, ``sweep``) and,
    unless ``start_worker`` is False, start local workers up to the ``workers`` setting
    (:meth:`JobQueue.ensure_worker`; one by default, and a worker alive anywhere on this cache counts).

    Raises what :meth:`JobQueue.submit` raises (``QueueFull``, a ``ValueError`` for a sweep value the protocol
    refuses, ``StoreError`` for an unusable cache); the caller words them. A worker that cannot be started
    does not undo the submission: it is reported as ``failed``.
    """
    job_id = queue.submit(protocol, int(repeats), **options)
    job = queue.job(job_id) or {}
    worker: WorkerState = "not needed"
    if start_worker and job.get("state") in ("queued", "running"):
        try:
            alive = bool(queue.workers())
            started = queue.ensure_worker()
        except Exception as exc:  # noqa: BLE001 - the job is queued; the caller says how to start a worker
            return Submitted(job_id, job, "failed", exc)
        worker = "running" if alive else ("started" if started else "none")
    return Submitted(job_id, job, worker)
