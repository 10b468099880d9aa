"""Workers: processes that claim jobs from :class:`core.jobs.queue.JobQueue` and train them with ``core``.

The executor is two small pieces so that a later Ray executor can reuse them unchanged:

* :func:`execute` runs one job given only its JSON dict, a :class:`~core.results.store.RunStore` (the one module that
  reads and writes results), a ``progress`` callback and a ``should_stop`` callback. It knows nothing about the
  queue, processes or hosts; a Ray task can call it (or :func:`execute_repeat` per repeat) anywhere that can
  reach the results store.
* :class:`Worker` is the local executor: claim, heartbeat thread, run :func:`execute`, record the outcome.

Workers are separate processes started with ``subprocess`` (fork + exec of a fresh interpreter, never a fork of
a process that already loaded TensorFlow), detached into their own session so closing the app or the terminal
does not kill a running job. TensorFlow is imported only when the first job trains.

What happens when a worker is killed (``kill -9``, OOM killer, power cut)
--------------------------------------------------------------------------
1. The worker dies mid-epoch. Nothing is written: its job stays ``running`` with its last ``heartbeat``.
   On disk, the repeat's workdir holds the per-epoch log (fsynced at each epoch end) and Keras'
   ``BackupAndRestore`` snapshot of the last completed epoch; earlier repeats are already in ``RunStore``.
2. The next ``JobQueue.recover()`` - run by any worker's loop every poll, by ``jobs()`` (every app rerun and
   ``python -m core jobs``) and by ``ensure_worker()`` - sees the job's owner is dead: on the same host its pid
   is gone (immediate), otherwise its heartbeat is older than ``stale_after`` (30 s by default). In one
   transaction it sets the job back to ``queued`` (``attempts`` stays counted; after ``max_attempts`` deaths in a
   row that finished no stage-one epoch and stored no repeat it is marked ``failed`` instead) and forgets the
   dead worker's record.
3. If no worker is alive, the app's ``ensure_worker()`` starts one; a worker started by hand just polls.
4. A worker claims the job (atomic), re-checks which repeats are stored, loads the data once, and calls
   ``run_repeat`` on the same ``store.workdir(key, repeat)``. ``BackupAndRestore`` restores weights, optimizer
   and epoch; the epoch log is cut back to that epoch and replayed into EarlyStopping/ModelCheckpoint; the
   job's progress gets a ``resumed`` entry (``{"repeat", "stage", "epoch", "attempt"}``) and its history is
   cut back to match. Training continues from the last completed epoch (at most the epoch in flight is redone).
5. The repeat ends with a full record (all stage-one epochs, both heads), stored atomically; the job is ``done``.
   Should the killed worker somehow come back (a frozen VM), every write it attempts is fenced by the lease
   (``beat`` answers ``"lost"``) and it stops without touching the workdir.

Tested in ``tests/test_jobs.py::test_worker_killed_with_sigkill_mid_job_is_resumed_by_another_worker``: a
``python -m core worker`` subprocess trains a 6-epoch Fashion-MNIST job (200 images); once the job's progress
shows stage one at epoch >= 2 the test sends SIGKILL, checks the job is still ``running``, starts a second
worker, and asserts the job ends ``done`` on attempt 2, its progress records a stage-one resume at an epoch
between 1 and the one reached, the worker log says "resumed stage1 after epoch", the stored record's stage-one
history has epochs 1-6, the models exist, and no worker is left registered. SIGTERM (shutdown/reboot) is the
gentle case: the worker stops at the next batch check, hands the job back (``queued``, workdir kept) and exits
(``test_sigterm_hands_the_running_job_back_to_the_queue``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable

from ..training.cluster import Executor
from ..protocol.config import Protocol
from .queue import JobQueue
from ..training.leases import HEARTBEAT_S, hostname
from ..results.store import RunStore
from ..protocol.events import event_kind
from ..protocol.words import count_text, repeat_name, repeats_named

ARTEFACT_BUDGET_MB = os.environ.get("TWO_STAGE_ARTEFACT_MB", "2048")
"""Size budget of ``cache/artefacts`` (trained ``.keras`` models) in MB; empty or ``none`` = unlimited. When a
repeat is stored and the folder is over budget, the models of the oldest finished repeats are deleted (their
records - numbers and learning curves - are always kept). See :meth:`RunStore.prune_artefacts`."""


def artefact_budget() -> int | None:
    value = str(ARTEFACT_BUDGET_MB).strip().lower()
    return None if value in ("", "none") else int(float(value) * 2**20)


def execute(job: dict[str, Any], store: RunStore, progress: Callable[[dict], None],
            should_stop: Callable[[], bool], executor: Executor | None = None) -> None:
    """Train the job's missing repeats through :func:`core.training.experiment.run_experiment` (the one loop over
    repeats), applying the artefact budget after each stored repeat. Raises ``Stopped`` when stopped, and
    whatever loading or training raised (the caller turns it into the job's error). The job trains where its
    submitter asked (``job["executor"]``), else with ``executor`` (the worker's), else as
    :func:`core.training.cluster.worker_default` says ($TWO_STAGE_RAY_ADDRESS: on that Ray cluster)."""
    from ..training.cluster import job_executor
    from ..training.experiment import missing_repeats, run_experiment

    if job.get("kind") == "sweep":  # one job for every point of a sweep (core.studies.sweeps)
        from ..studies.sweeps import execute_job

        return execute_job(job, store, progress, should_stop, executor=job_executor(job, executor),
                           after_store=lambda record: store.prune_artefacts(artefact_budget()))
    unknown = Protocol.unknown_fields(job["protocol"])
    if unknown:  # queued by newer code: reading it without them would train (or find stored) another experiment
        raise ValueError(f"this job sets {', '.join(unknown)}, which this worker's code does not know; run a worker "
                         f"from the code that queued it")
    protocol = Protocol.from_dict(job["protocol"])
    repeats = int(job["repeats"])
    todo = missing_repeats(store, protocol, repeats)
    progress({"stage": "plan", "todo": todo, "repeats": repeats, "repeats_done": repeats - len(todo)})
    if todo:
        run_experiment(protocol, repeats, store, progress=progress, should_stop=should_stop,
                       after_store=lambda record: store.prune_artefacts(artefact_budget()),
                       executor=job_executor(job, executor))


def error_text(exc: BaseException) -> str:
    """The message a user sees for a failed job."""
    from ..data.datasets import DatasetUnavailable
    from ..results.store import StoreError

    if isinstance(exc, (DatasetUnavailable, StoreError)):  # already one line for the user (e.g. a full disk)
        return str(exc)
    if isinstance(exc, MemoryError):
        return ("Out of memory while training. Use fewer images (--limit), a smaller batch or image size, "
                "or a machine with more memory.")
    name = type(exc).__name__
    if "ResourceExhausted" in name or "out of memory" in str(exc).lower():
        return f"Out of memory on the accelerator ({name}): use a smaller batch size or fewer images."
    return f"{name}: {exc}" if str(exc) else name


class Worker:
    """Claims and runs jobs until idle for ``idle_exit`` seconds (``None``: forever) or ``max_jobs`` ran."""

    def __init__(self, root: str | Path | None = None, *, worker_id: str | None = None,
                 idle_exit: float | None = None, stale_after: float | None = None,
                 heartbeat: float | None = None, poll: float = 1.0, max_jobs: int | None = None,
                 log: Callable[[str], None] | None = None, executor: Executor | None = None):
        self.queue = JobQueue(root, stale_after=stale_after)
        self.queue.require_writable("start a worker")  # before any signal handler or thread exists
        self.executor = executor
        self.id = worker_id or uuid.uuid4().hex[:8]
        self.idle_exit, self.poll, self.max_jobs = idle_exit, poll, max_jobs
        self.heartbeat_s = HEARTBEAT_S if heartbeat is None else heartbeat
        self.log = log or (lambda text: print(f"[{time.strftime('%H:%M:%S')}] worker {self.id}: {text}",
                                              flush=True))
        self.job_id: str | None = None
        self.verdict = "ok"  # the last heartbeat's answer for the current job: ok / cancelled / lost
        self.shutdown = threading.Event()
        self._beating = threading.Event()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ loop
    def run(self) -> int:
        self.queue.register_worker(self.id, os.getpid(), hostname())
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._beating.set()
        beat.start()
        self.log(f"started (pid {os.getpid()}, cache {self.queue.root})")
        ran, idle_since = 0, time.monotonic()
        try:
            while not self.shutdown.is_set():
                self.queue.recover()
                job = self.queue.claim(self.id, os.getpid(), hostname())
                if job is None:
                    if self.idle_exit is not None and time.monotonic() - idle_since > self.idle_exit:
                        self.log(f"idle for {self.idle_exit:.0f}s, exiting")
                        break
                    self.shutdown.wait(self.poll)
                    continue
                self.run_job(job)
                ran += 1
                idle_since = time.monotonic()
                if self.max_jobs is not None and ran >= self.max_jobs:
                    break
        finally:
            self._beating.clear()
            self.queue.unregister_worker(self.id)
            self.log("stopped")
        return 0

    def run_job(self, job: dict[str, Any]) -> str:
        """Run one claimed job to its end state; returns that state (or ``"requeued"``/``"lost"``)."""
        job_id = job["id"]
        with self._lock:
            self.job_id, self.verdict = job_id, "ok"
        self.log(f"job {job_id} (attempt {job['attempts']}): {job['describe']}, {count_text(job['repeats'], 'repeat')}")

        def progress(event: dict) -> None:
            if not self.queue.report(job_id, self.id, event):  # cancelled, or handed to another worker
                verdict = self.queue.beat(self.id, job_id)
                with self._lock:
                    if self.verdict == "ok":
                        self.verdict = verdict if verdict != "ok" else "lost"
            kind = event_kind(event)
            if kind == "resumed":
                self.log(f"job {job_id} {repeat_name(event.get('repeat') or 0)}: resumed {event['stage']} after "
                         f"epoch {event['resumed_at_epoch']}")
            elif kind == "epoch":
                self.log(f"job {job_id} {repeat_name(event.get('repeat') or 0)} {event['stage']} epoch "
                         f"{event['epoch']}/{event['epochs']}")

        def should_stop() -> bool:
            return self.shutdown.is_set() or self.verdict != "ok"

        from ..training.experiment import Stopped

        try:
            execute(job, self.queue.store, progress, should_stop, self.executor)
        except Stopped as stop:
            return self._stopped(job, stop.interrupted)
        except KeyboardInterrupt:
            self.queue.release(job_id, self.id, "worker interrupted")
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure ends this job, never the worker
            if isinstance(exc, SystemExit):
                self.queue.release(job_id, self.id, "worker exiting")
                raise
            text = error_text(exc)
            self.log(f"job {job_id} failed: {text}\n{traceback.format_exc()}")
            self.queue.finish(job_id, self.id, "failed", error=text, detail=traceback.format_exc(limit=8))
            return "failed"
        finally:
            with self._lock:
                self.job_id = None
        if self.verdict == "cancelled":  # cancelled after the last repeat was stored: nothing to undo
            self.queue.cancelled_cleanup_done(job_id, self.id)
            return "cancelled"
        state = "done" if self.queue.finish(job_id, self.id, "done") else "lost"
        self.log(f"job {job_id} {state}")
        return state

    def _stopped(self, job: dict[str, Any], interrupted: list[int]) -> str:
        if self.verdict == "cancelled":
            for repeat in interrupted:
                self.queue.store.discard_unfinished(job["key"], repeat)
            self.queue.cancelled_cleanup_done(job["id"], self.id)
            self.log(f"job {job['id']} cancelled; unfinished {repeats_named(interrupted)} discarded"
                     if interrupted else f"job {job['id']} cancelled")
            return "cancelled"
        if self.verdict == "lost":  # another worker owns it now: leave its workdir alone
            self.log(f"job {job['id']} was handed to another worker; stopped")
            return "lost"
        self.queue.release(job["id"], self.id, "worker stopped")
        self.log(f"job {job['id']} handed back to the queue; it resumes from its last epoch")
        return "requeued"

    # ------------------------------------------------------------------------------------- heartbeat
    def _heartbeat_loop(self) -> None:
        while self._beating.is_set():
            with self._lock:
                job_id = self.job_id
            try:
                verdict = self.queue.beat(self.id, job_id)
                with self._lock:
                    if job_id is not None and job_id == self.job_id and self.verdict == "ok":
                        self.verdict = verdict
            except Exception as exc:  # noqa: BLE001 - a busy database must not kill the heartbeat
                self.log(f"heartbeat failed: {exc}")
            time.sleep(self.heartbeat_s)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: finish the current epoch's batch check, hand the job back, exit. A second one
        raises KeyboardInterrupt at once (the job is still handed back)."""
        def handler(signum, frame):
            if self.shutdown.is_set():
                raise KeyboardInterrupt
            self.log(f"signal {signum}: stopping after the current batch")
            self.shutdown.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
