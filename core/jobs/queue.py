"""A durable job queue in ``<cache>/jobs`` that the app, the CLI and any number of workers share.

Design
------
*One job per experiment* (a protocol and a number of repeats), not one per repeat. The user submits, watches
and cancels experiments; a worker loads the dataset once per job rather than once per repeat; and durability
does not need finer jobs, because each repeat is stored in :class:`core.results.store.RunStore` the moment it ends and a
resumed job only trains the repeats that are missing (a crashed repeat itself resumes from its last completed
epoch through ``run_repeat``'s workdir). Two jobs of the same protocol never run at the same time (``claim``
skips a queued job whose protocol key is running), so two workers can never train the same repeat twice.

*Storage.* One diskcache ``Cache`` with ``eviction_policy="none"`` (job state is never evicted) and
``JSONDisk``: every value is JSON, so nothing can be pickled into the queue - a job holds a protocol (paths and
numbers), never data. Keys: ``job/<id>`` (the job dict the app reads) and ``worker/<id>`` (a live worker).

*Atomicity.* Every read-modify-write runs inside ``Cache.transact()``, which is one SQLite ``BEGIN IMMEDIATE``
transaction: at most one process at a time is inside it, across processes and machines sharing the folder.
``claim`` picks the oldest queued job and marks it running for its worker in one such transaction, so two
workers racing for one job cannot both get it.

*Leases.* A running job names its worker and carries a ``heartbeat`` time that the worker's heartbeat thread
refreshes every few seconds. A job whose heartbeat is older than ``stale_after`` seconds (or whose worker
process is known dead on this host) is requeued by whoever notices first - ``jobs()``, ``ensure_worker()`` or a
worker's loop (:meth:`JobQueue.recover`). Its next worker calls ``run_repeat`` on the same workdir, which
resumes from the last completed epoch. A job whose workers died ``max_attempts`` times in a row without durable
progress (a checkpointed stage-one epoch or a stored repeat) is marked failed (it is probably killing them, e.g.
out of memory) so it cannot block the queue forever; a worker that dies after making progress (a machine that is
switched off every few hours during a two-day run) does not count towards that. Every worker write is fenced:
it only lands while the job is still running *for that worker*, so a worker that was presumed dead and wakes up
later notices (its heartbeat reports ``"lost"``) and stops without touching anything.

*A read-only cache* (a results disk shared read-only, a copied cache) opens the queue through SQLite's
read-only mode: jobs and workers are listed as they are (nothing is requeued), and ``submit``, ``cancel`` and
starting a worker raise :class:`core.results.store.StoreError` saying so. A damaged queue database raises the same error
with how to move it aside (see :func:`core.results.store.open_json_cache`).

*Demo mode* caps submissions twice: per browser session (the page) and, here, for all visitors together
(``Limits.submits_per_hour_total``), counted from the ``created`` times of the jobs in this queue.

*Cancellation* of a queued job is immediate. For a running job it sets the state to ``cancelled`` at once (so
every browser shows it) with ``cleanup`` pending; the worker's ``should_stop`` sees it at its next heartbeat,
``run_repeat`` raises ``Cancelled`` before returning a record, the worker deletes the unfinished repeat's
workdir and clears ``cleanup``. Repeats that had finished before the cancel stay stored (they are complete
records). If the worker is dead, :meth:`recover` does the cleanup.

Nothing here imports TensorFlow: the Streamlit app imports this module on every rerun.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from ..data.safe_load import UnsafeCacheError
from ..protocol.config import Protocol
from ..protocol.settings import worker_environment
from .live import apply_event, durable, note_claim, note_queued, note_release  # noqa: F401 - apply_event: API
from ..training.leases import STALE_AFTER_S, hostname, pid_alive
from ..results.store import (PROJECT_ROOT, RunStore, StoreError, create_cache_dir, default_cache_dir, is_read_only,
                    open_json_cache, read_only_message)

ACTIVE = ("queued", "running")
KEEP_WORKER_LOGS = 20
MAX_ATTEMPTS = int(os.environ.get("TWO_STAGE_MAX_ATTEMPTS", "3"))
"""A job whose workers died this many times in a row without progress is marked failed instead of requeued."""


class QueueFull(ValueError):
    """Raised by :meth:`JobQueue.submit` when demo mode's ``max_queued_jobs`` or hourly cap is reached."""


class JobQueue:
    """The queue under ``<root>/jobs``; ``root`` is the cache folder (``None``: the default one)."""

    def __init__(self, root: str | Path | None = None, *, stale_after: float | None = None,
                 max_attempts: int | None = None):
        self.root = Path(root) if root else default_cache_dir()
        self.dir = self.root / "jobs"
        self.read_only = is_read_only(self.root, self.dir)
        if not self.read_only:
            create_cache_dir(self.root)
        with untrusted_rows(self.dir):
            self.db = _QueueDatabase(open_json_cache(self.dir, "job queue", read_only=self.read_only), self.dir)
        self.stale_after = STALE_AFTER_S if stale_after is None else float(stale_after)
        self.max_attempts = MAX_ATTEMPTS if max_attempts is None else int(max_attempts)
        self._store: RunStore | None = None

    @property
    def store(self) -> RunStore:
        """Results live in :class:`RunStore`, the one module that reads and writes them."""
        if self._store is None:
            self._store = RunStore(self.root)
        return self._store

    def close(self) -> None:
        self.db.close()
        if self._store is not None:
            self._store.close()

    def require_writable(self, action: str) -> None:
        """Refuse ``action`` (e.g. "submit a job") on a read-only cache with one clear StoreError."""
        if self.read_only:
            raise StoreError(f"Cannot {action}: " + read_only_message(self.root, "its jobs can be listed"))

    # ------------------------------------------------------------------------------------------- submit
    def submit(self, protocol: Protocol, repeats: int, executor: dict[str, Any] | None = None,
               sweep: dict[str, Any] | None = None, estimate: dict[str, float] | None = None) -> str:
        """Queue an experiment; see the module docstring. Returns the job id.

        The same experiment (protocol key and repeats) already queued or running returns that job's id. If
        every repeat is already stored the job is recorded as ``done`` at once and nothing trains.
        ``executor`` (:meth:`core.training.cluster.Executor.to_dict`) is where the job should train; None lets the
        worker decide. It is kept beside the protocol, never in it: it does not change the numbers.
        ``sweep`` (:meth:`core.studies.sweeps.Sweep.to_dict`) makes it a sweep job: ``repeats`` per value of the swept
        field, one job for all its points; the job's ``repeats`` then counts the repeats of every point.
        ``estimate`` (:meth:`core.app.estimate.Estimate.parts`) gives the time left its first figures, before
        this job has measured its own (:mod:`core.jobs.live`).
        """
        if repeats < 1:
            raise ValueError("repeats must be at least 1")
        self.require_writable("submit a job")
        from ..studies.sweeps import job_plan

        key, protocols, describe = job_plan(protocol, sweep)
        per_point, repeats = repeats, repeats * len(protocols)
        stored = sum(self.store.has(p, i) for p in protocols for i in range(per_point))
        now = time.time()
        with self.db.transact():
            active = [j for j in self._all() if j["state"] in ACTIVE]
            for job in active:
                if job["key"] == key and job["repeats"] == repeats:
                    return job["id"]
            done = stored == repeats
            if not done:
                self._check_caps(active, now)
            job_id = uuid.uuid4().hex[:10]
            job = {
                "id": job_id, "key": key, "protocol": protocol.to_dict(), "describe": describe,
                "repeats": repeats, "state": "done" if done else "queued", "created": now, "updated": now,
                "started": None, "finished": now if done else None, "error": None, "worker": None,
                "worker_pid": None, "worker_host": None, "heartbeat": None, "attempts": 0, "deaths": 0,
                "cleanup": False,
                "from_cache": done, "executor": executor,
                **({"kind": "sweep", "sweep": {**sweep, "repeats": per_point}} if sweep else {}),
                "progress": {"repeat": 0, "repeats": repeats, "repeats_done": stored, "stage": "stored"
                             if done else "queued", "epoch": 0, "epochs": protocol.epochs, "logs": {},
                             "eta_seconds": 0.0 if done else None, "history": [], "resumed": [],
                             "todo": [], "epoch_seconds": {}},
            }
            note_queued(job["progress"], now, len(active), estimate)
            self.db.set(_job_key(job_id), job)
        return job_id

    def _check_caps(self, active: list[dict[str, Any]], now: float) -> None:
        """Demo mode's caps on what may wait in the queue and on new experiments per hour (all visitors)."""
        from ..protocol.settings import limits

        lim = limits()
        if lim.max_queued_jobs is not None and len(active) >= lim.max_queued_jobs:
            raise QueueFull(f"the queue is full ({len(active)} jobs); wait for one to finish or cancel one")
        if lim.submits_per_hour_total is not None:
            recent = sorted(j["created"] for j in self._all()
                            if not j.get("from_cache") and now - j["created"] < 3600)
            if len(recent) >= lim.submits_per_hour_total:
                wait = 3600 - (now - recent[-lim.submits_per_hour_total])
                raise QueueFull(f"this server takes at most {lim.submits_per_hour_total} new experiments per "
                                f"hour from all visitors together; the next one can start in about "
                                f"{max(1, round(wait / 60))} min")

    # ------------------------------------------------------------------------------------------- reading
    def jobs(self) -> list[dict[str, Any]]:
        """Every job, newest first (requeues jobs of dead workers first, so what it shows is current)."""
        self.recover()
        return sorted(self._all(), key=lambda j: j["created"], reverse=True)

    def job(self, job_id: str) -> dict[str, Any] | None:
        return self.db.get(_job_key(job_id))

    def find(self, prefix: str) -> dict[str, Any] | None:
        """The job whose id starts with ``prefix`` if exactly one does (for the CLI)."""
        hits = [j for j in self._all() if j["id"].startswith(prefix)]
        return hits[0] if len(hits) == 1 else None

    def _all(self) -> list[dict[str, Any]]:
        out = []
        for k in list(self.db.iterkeys()):
            if isinstance(k, str) and k.startswith("job/"):
                job = self.db.get(k)
                if job is not None:
                    out.append(job)
        return out

    # ------------------------------------------------------------------------------------------- cancel
    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False if it does not exist or has already finished."""
        self.require_writable("cancel a job")
        now = time.time()
        with self.db.transact():
            job = self.job(job_id)
            if job is None or job["state"] not in ACTIVE:
                return False
            running = job["state"] == "running"
            job.update(state="cancelled", updated=now, finished=now, cleanup=True,
                       error=None)
            job["progress"]["eta_seconds"] = None
            self.db.set(_job_key(job_id), job)
        if not running or not self._owner_alive(job, now):
            self._cleanup(job)  # nobody is training in its workdirs: tidy them here
        return True

    def _cleanup(self, job: dict[str, Any]) -> None:
        """Remove the workdirs of a cancelled job's unfinished repeats (stored repeats are kept)."""
        for repeat in range(job["repeats"]):
            self.store.discard_unfinished(job["key"], repeat)
        self._update(job["id"], lambda j: j.update(cleanup=False))

    # ------------------------------------------------------------------------------------ worker side
    def claim(self, worker_id: str, pid: int | None = None, host: str | None = None) -> dict | None:
        """Atomically take the oldest queued job whose protocol is not running elsewhere; None if none."""
        now = time.time()
        with self.db.transact():
            jobs = self._all()
            busy = {j["key"] for j in jobs if j["state"] == "running"}
            for job in sorted((j for j in jobs if j["state"] == "queued"), key=lambda j: j["created"]):
                if job["key"] in busy:
                    continue
                job.update(state="running", worker=worker_id, worker_pid=pid, worker_host=host or hostname(),
                           heartbeat=now, updated=now, attempts=job["attempts"] + 1,
                           durable_at_claim=durable(job["progress"]), started=job["started"] or now)
                note_claim(job, now)
                self.db.set(_job_key(job["id"]), job)
                return job
        return None

    def beat(self, worker_id: str, job_id: str | None = None) -> str:
        """Refresh a worker's (and its job's) heartbeat. Returns what the job's worker should do:
        ``"ok"`` (carry on), ``"cancelled"`` (the user cancelled it) or ``"lost"`` (the job was given to
        another worker or no longer exists: stop and write nothing)."""
        now = time.time()
        with self.db.transact():
            record = self.db.get(_worker_key(worker_id))
            if record is not None:
                record["heartbeat"] = now
                record["job"] = job_id
                self.db.set(_worker_key(worker_id), record)
            if job_id is None:
                return "ok"
            job = self.job(job_id)
            if job is None:
                return "lost"
            if job["state"] == "cancelled" and job["worker"] == worker_id:
                return "cancelled"
            if job["state"] != "running" or job["worker"] != worker_id:
                return "lost"
            job["heartbeat"] = now
            self.db.set(_job_key(job_id), job)
            return "ok"

    def report(self, job_id: str, worker_id: str, event: dict[str, Any]) -> bool:
        """Fold a progress event from ``run_repeat``/the worker into the job; False if the lease is lost."""
        def apply(job):
            if job["state"] != "running" or job["worker"] != worker_id:
                return False
            job["heartbeat"] = time.time()
            apply_event(job["progress"], event, job["attempts"])
        return self._update(job_id, apply) is not None

    def finish(self, job_id: str, worker_id: str, state: str, error: str | None = None,
               detail: str | None = None) -> bool:
        """End a running job (``done``/``failed``); fenced by the lease like every worker write."""
        assert state in ("done", "failed")
        now = time.time()

        def apply(job):
            if job["state"] != "running" or job["worker"] != worker_id:
                return False
            job.update(state=state, error=error, finished=now, detail=detail)
            job["progress"]["eta_seconds"] = 0.0 if state == "done" else None
            if state == "done":
                job["progress"]["stage"] = "finished"
        return self._update(job_id, apply) is not None

    def cancelled_cleanup_done(self, job_id: str, worker_id: str) -> None:
        self._update(job_id, lambda j: j.update(cleanup=False) if j["worker"] == worker_id else False)

    def release(self, job_id: str, worker_id: str, reason: str = "worker stopped") -> bool:
        """Give a running job back to the queue (worker shutting down); it resumes where it stopped."""
        def apply(job):
            if job["state"] != "running" or job["worker"] != worker_id:
                return False
            job.update(state="queued", worker=None, worker_pid=None, heartbeat=None)
            note_release(job, time.time())
            job["progress"]["stage"] = f"queued ({reason})"
            job["attempts"] = max(0, job["attempts"] - 1)  # a clean hand-back is not a crash
        return self._update(job_id, apply) is not None

    # ---------------------------------------------------------------------------------------- recovery
    def recover(self, now: float | None = None) -> list[str]:
        """Requeue running jobs whose worker stopped heart-beating; tidy after dead cancelled jobs; forget
        dead workers. Cheap when nothing is stale (one read pass, no write). Returns the requeued ids.
        A read-only queue is shown as it is: nothing can be requeued there."""
        if self.read_only:
            return []
        now = time.time() if now is None else now
        candidates = [j for j in self._all()
                      if (j["state"] == "running" or (j["state"] == "cancelled" and j.get("cleanup")))
                      and not self._owner_alive(j, now)]
        dead_workers = [w for w in self._worker_records() if not self._worker_alive(w, now)]
        requeued, to_clean = [], []
        if candidates or dead_workers:
            with self.db.transact():
                for job in candidates:
                    job = self.job(job["id"])
                    if job is None or self._owner_alive(job, now):
                        continue
                    if job["state"] == "cancelled" and job.get("cleanup"):
                        to_clean.append(job)
                        continue
                    if job["state"] != "running":
                        continue
                    seen = job["heartbeat"] or job["updated"]
                    progressed = durable(job["progress"]) > job.get("durable_at_claim", -1)
                    job["deaths"] = 0 if progressed else job.get("deaths", 0) + 1
                    if job["deaths"] >= self.max_attempts:
                        job.update(state="failed", finished=now, error=(
                            f"The worker running this job stopped {job['deaths']} times in a row without "
                            "finishing an epoch (killed, out of memory, or the machine restarted), so it was not "
                            "retried again. Finished repeats are kept; submit it again to continue."))
                    else:
                        note_release(job, seen)
                        job.update(state="queued", worker=None, worker_pid=None)
                        job["progress"]["stage"] = (f"requeued: worker {job['worker_host']} silent for "
                                                    f"{now - seen:.0f}s")
                        requeued.append(job["id"])
                    job["updated"] = now
                    self.db.set(_job_key(job["id"]), job)
                for record in dead_workers:
                    current = self.db.get(_worker_key(record["id"]))
                    if current is not None and not self._worker_alive(current, now):
                        self.db.delete(_worker_key(record["id"]))
        for job in to_clean:
            self._cleanup(job)
        return requeued

    def _owner_alive(self, job: dict[str, Any], now: float) -> bool:
        if not job.get("worker"):
            return False
        if job.get("worker_host") == hostname() and job.get("worker_pid") and not pid_alive(job["worker_pid"]):
            return False
        seen = job.get("heartbeat") or job["updated"]
        return now - seen <= self.stale_after

    # ----------------------------------------------------------------------------------------- workers
    def register_worker(self, worker_id: str, pid: int, host: str | None = None, **extra: Any) -> None:
        self.require_writable("start a worker")
        now = time.time()
        self.db.set(_worker_key(worker_id), {"id": worker_id, "pid": pid, "host": host or hostname(),
                                             "heartbeat": now, "started": now, "job": None, **extra})

    def unregister_worker(self, worker_id: str) -> None:
        self.db.delete(_worker_key(worker_id))

    def workers(self) -> list[dict[str, Any]]:
        """Workers alive now (fresh heartbeat, and process running when it is on this host)."""
        now = time.time()
        return [w for w in self._worker_records() if self._worker_alive(w, now)]

    def _worker_records(self) -> list[dict[str, Any]]:
        out = []
        for k in list(self.db.iterkeys()):
            if isinstance(k, str) and k.startswith("worker/"):
                record = self.db.get(k)
                if record is not None:
                    out.append(record)
        return out

    def _worker_alive(self, record: dict[str, Any], now: float) -> bool:
        if record.get("host") == hostname() and record.get("pid") and not pid_alive(record["pid"]):
            return False
        return now - record["heartbeat"] <= self.stale_after

    def ensure_worker(self, count: int | None = None, idle_exit: float | None = 300.0) -> bool:
        """Start local detached workers until ``count`` (default: the ``workers`` setting) are alive.

        Workers anywhere count (a GPU machine's worker pointing at this cache is enough). The slot is reserved
        in the same transaction that counted the live workers, so two browser sessions calling this at once
        start one worker, not two. Started workers exit after ``idle_exit`` idle seconds.
        """
        from ..protocol.settings import limits
        if self.read_only:
            return False
        self.recover()
        count = limits().workers if count is None else count
        now = time.time()
        with self.db.transact():
            alive = [w for w in self._worker_records() if self._worker_alive(w, now)]
            missing = max(0, count - len(alive))
            reserved = [uuid.uuid4().hex[:8] for _ in range(missing)]
            for worker_id in reserved:
                self.db.set(_worker_key(worker_id), {"id": worker_id, "pid": None, "host": hostname(),
                                                     "heartbeat": now, "started": now, "job": None,
                                                     "starting": True})
        ok = bool(alive)
        for worker_id in reserved:
            try:
                pid = spawn_worker(self.root, worker_id=worker_id, idle_exit=idle_exit,
                                   stale_after=self.stale_after)
            except OSError:
                self.unregister_worker(worker_id)
                continue
            with self.db.transact():
                record = self.db.get(_worker_key(worker_id))
                if record is not None and record.get("pid") is None:
                    record["pid"] = pid
                    self.db.set(_worker_key(worker_id), record)
            ok = True
        return ok or count == 0

    # -------------------------------------------------------------------------------------------- util
    def _update(self, job_id: str, fn: Callable[[dict], Any]) -> dict | None:
        """Read-modify-write one job in a transaction; ``fn`` returning False aborts (nothing written)."""
        with self.db.transact():
            job = self.job(job_id)
            if job is None or fn(job) is False:
                return None
            job["updated"] = time.time()
            self.db.set(_job_key(job_id), job)
            return job


@contextlib.contextmanager
def untrusted_rows(folder: Path) -> Iterator[None]:
    """A row this project never writes (a pickle planted in the queue's database) becomes one
    :class:`StoreError` that says how to move the queue aside, as the run records' does; nothing is loaded."""
    try:
        yield
    except UnsafeCacheError as exc:
        raise StoreError(f"The job queue in {folder} contains data this project never writes ({exc}); it was not "
                         f"loaded. Move the folder aside: mv {folder} {folder}.untrusted") from exc


class _QueueDatabase:
    """The queue's JSON database with its two reading paths (``get``, ``iterkeys``) under :func:`untrusted_rows`,
    so every command (``jobs``, ``watch``, ``cancel``, ``worker``) and page meets one line, never a traceback."""

    def __init__(self, db: Any, folder: Path):
        self._db, self._folder = db, folder

    def get(self, *args: Any, **kwargs: Any) -> Any:
        with untrusted_rows(self._folder):
            return self._db.get(*args, **kwargs)

    def iterkeys(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with untrusted_rows(self._folder):
            yield from self._db.iterkeys(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def _job_key(job_id: str) -> str:
    return f"job/{job_id}"


def _worker_key(worker_id: str) -> str:
    return f"worker/{worker_id}"


# ------------------------------------------------------------------------------------ starting workers
def spawn_worker(root: str | Path, *, worker_id: str | None = None, idle_exit: float | None = 300.0,
                 stale_after: float | None = None, heartbeat: float | None = None) -> int:
    """Start ``python -m core worker`` detached (own session, stdin closed, output in
    ``<root>/jobs/worker-<pid>.log``) and return its pid. It is a fresh interpreter, never a fork."""
    root = Path(root)
    logs = root / "jobs"
    logs.mkdir(parents=True, exist_ok=True)
    worker_id = worker_id or uuid.uuid4().hex[:8]
    cmd = [sys.executable, "-m", "core", "worker", "--cache", str(root), "--worker-id", worker_id]
    if idle_exit is not None:
        cmd += ["--idle-exit", str(idle_exit)]
    if stale_after is not None:
        cmd += ["--stale-after", str(stale_after)]
    if heartbeat is not None:
        cmd += ["--heartbeat", str(heartbeat)]
    env = {**worker_environment(dict(os.environ)), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    tmp_log = logs / f"worker-{worker_id}.log"
    fd = os.open(tmp_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT,
                                cwd=str(PROJECT_ROOT), env=env, start_new_session=True, close_fds=True)
    finally:
        os.close(fd)
    os.replace(tmp_log, logs / f"worker-{proc.pid}.log")
    _CHILDREN.append(proc)
    _reap()
    _prune_logs(logs)
    return proc.pid


_CHILDREN: list[subprocess.Popen] = []


def _reap() -> None:
    """Collect exited workers this process started, so they do not linger as zombies."""
    for proc in list(_CHILDREN):
        if proc.poll() is not None:
            _CHILDREN.remove(proc)


def _prune_logs(folder: Path) -> None:
    logs = sorted(folder.glob("worker-*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in logs[KEEP_WORKER_LOGS:]:
        old.unlink(missing_ok=True)
