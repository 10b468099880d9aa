"""Job-queue sub-commands: ``submit``, ``jobs``, ``watch``, ``cancel`` and ``worker`` (see :mod:`core.jobs.queue`)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from .main import (add_cache_argument, add_executor_arguments, add_protocol_arguments, command, executor_from_args,
                  protocol_from_args)
from ..jobs.progress import progress_text
from ..jobs.submit import submit_and_start
from ..protocol.words import count_text

if TYPE_CHECKING:
    from ..protocol.config import Protocol
    from ..jobs.queue import JobQueue


WORKER_LINES = {"running": "a worker is running; it will pick the job up",
                "started": "started a local worker (log in {log})",
                "none": "no worker could be started; run `python -m core worker`",
                "failed": "starting a worker failed ({error}); run `python -m core worker`"}


def _queue(args: argparse.Namespace):
    from ..jobs.queue import JobQueue

    return JobQueue(args.cache)


def describe_progress(job: dict[str, Any], now: float | None = None) -> str:
    """Where a job stands, in the words the Train page uses (:func:`core.jobs.progress.progress_text`); a
    failed job's error instead."""
    if job["state"] == "failed":
        return f"error: {job['error']}"
    text = progress_text(job, now)
    if job["state"] == "done" and job.get("from_cache"):
        text += " (all from the cache, nothing retrained)"
    return text


def print_jobs(jobs: list[dict[str, Any]], out=None) -> None:
    out = out or sys.stdout  # looked up at call time, so a redirected stdout is honoured
    if not jobs:
        print("no jobs", file=out)
        return
    print(f"{'ID':<10}  {'STATE':<9}  {'SUBMITTED':<19}  {'EXPERIMENT':<40}  PROGRESS", file=out)
    for job in jobs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["created"]))
        what = job["describe"][:40]
        print(f"{job['id']:<10}  {job['state']:<9}  {when:<19}  {what:<40}  {describe_progress(job)}", file=out)


# ------------------------------------------------------------------------------------------------ submit
def _submit_arguments(parser: argparse.ArgumentParser) -> None:
    add_protocol_arguments(parser)
    add_cache_argument(parser)
    parser.add_argument("--no-worker", action="store_true", help="only queue it; do not start a local worker")
    parser.add_argument("--watch", action="store_true", help="follow the job until it ends")
    add_executor_arguments(parser, default="the worker's")


def submit_job(queue: JobQueue, protocol: Protocol, repeats: int, *, start_worker: bool = True, label: str = "",
               **options: Any) -> str:
    """Queue one experiment, print its id (stdout) and its state (stderr), and start a local worker if none runs.

    Every command that queues work (``submit``, ``report --submit``, ``sweep --submit``) goes through here, so
    they all say the same thing and start a worker the same way. ``options`` go to :meth:`JobQueue.submit`
    (``executor``, ``sweep``); :class:`core.jobs.queue.QueueFull` is left to the caller, which knows its exit code.
    """
    submitted = submit_and_start(queue, protocol, repeats, start_worker=start_worker, **options)
    job = submitted.job
    print(f"{submitted.job_id}  {label}".rstrip())
    print(f"{job['state']}: {job['describe']}, {count_text(job['repeats'], 'repeat')}", file=sys.stderr)
    if submitted.worker in WORKER_LINES:
        print(WORKER_LINES[submitted.worker].format(log=queue.dir, error=submitted.error), file=sys.stderr)
    return submitted.job_id


@command("submit", "queue an experiment for background workers (same options as run)", _submit_arguments)
def _submit(args: argparse.Namespace) -> int:
    from ..jobs.queue import QueueFull

    protocol = protocol_from_args(args)  # every option is checked before the cache folder is made
    executor = executor_from_args(args)
    q = _queue(args)
    try:
        job_id = submit_job(q, protocol, args.repeats, start_worker=not args.no_worker,
                            executor=executor.to_dict() if executor else None)
    except QueueFull as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    if args.watch:
        return _follow(q, [job_id], interval=2.0)
    return 0


# ------------------------------------------------------------------------------------------------ jobs
def _jobs_arguments(parser: argparse.ArgumentParser) -> None:
    add_cache_argument(parser)
    parser.add_argument("--all", action="store_true", help="also list finished jobs (default: the last 20)")


@command("jobs", "list queued, running and finished jobs", _jobs_arguments)
def _jobs(args: argparse.Namespace) -> int:
    q = _queue(args)
    jobs = q.jobs()
    print_jobs(jobs if args.all else jobs[:20])
    workers = q.workers()
    print(f"\n{len(workers)} worker(s) alive" + "".join(
        f"\n  {w['id']} pid {w['pid']} on {w['host']}" + (f", job {w['job']}" if w.get("job") else "")
        for w in workers))
    if q.read_only:
        print(f"note: the cache {q.root} is read-only: jobs are shown as stored there (a job whose worker died "
              "is not requeued); submit, cancel and worker need a writable cache.", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------ watch
def _watch_arguments(parser: argparse.ArgumentParser) -> None:
    add_cache_argument(parser)
    parser.add_argument("ids", nargs="*", metavar="ID", help="jobs to follow (default: all unfinished)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls")


@command("watch", "follow jobs' progress until they end", _watch_arguments)
def _watch(args: argparse.Namespace) -> int:
    q = _queue(args)
    if args.ids:
        ids = []
        for prefix in args.ids:
            job = q.find(prefix)
            if job is None:
                print(f"error: no single job matches {prefix!r}", file=sys.stderr)
                return 2
            ids.append(job["id"])
    else:
        ids = [j["id"] for j in q.jobs() if j["state"] in ("queued", "running")]
        if not ids:
            print("nothing queued or running")
            return 0
    if q.read_only:  # nobody can requeue a dead worker's job here, so following could wait forever
        for job_id in ids:
            job = q.job(job_id)
            print(f"{job['id']} {job['state']}: {describe_progress(job)}")
        print(f"note: the cache {q.root} is read-only: this is the jobs' state as stored; watching needs a "
              "writable cache.", file=sys.stderr)
        return 0
    return _follow(q, ids, args.interval)


def _follow(q, ids: list[str], interval: float) -> int:
    last: dict[str, str] = {}
    try:
        while True:
            q.recover()
            jobs = [q.job(i) for i in ids]
            for job in jobs:
                prog = job.get("progress") or {}
                step = repr((job["state"], prog.get("repeats_done"), prog.get("repeat"), prog.get("stage"),
                             prog.get("epoch")))  # a new line per step, not per tick of the elapsed time
                if last.get(job["id"]) != step:
                    print(f"[{time.strftime('%H:%M:%S')}] {job['id']} {job['state']}: {describe_progress(job)}",
                          flush=True)
                    last[job["id"]] = step
            if all(j["state"] not in ("queued", "running") for j in jobs):
                return 0 if all(j["state"] == "done" for j in jobs) else 1
            time.sleep(interval)
    except KeyboardInterrupt:
        print("\nstopped watching; the jobs go on", file=sys.stderr)
        return 130


# ------------------------------------------------------------------------------------------------ cancel
def _cancel_arguments(parser: argparse.ArgumentParser) -> None:
    add_cache_argument(parser)
    parser.add_argument("id", metavar="ID", help="job id (a unique prefix is enough)")


@command("cancel", "cancel a queued or running job", _cancel_arguments)
def _cancel(args: argparse.Namespace) -> int:
    q = _queue(args)
    job = q.find(args.id)
    if job is None:
        print(f"error: no single job matches {args.id!r}", file=sys.stderr)
        return 2
    if q.cancel(job["id"]):
        print(f"cancelled {job['id']}")
        return 0
    print(f"job {job['id']} is already {job['state']}", file=sys.stderr)
    return 1


# ------------------------------------------------------------------------------------------------ worker
def _worker_arguments(parser: argparse.ArgumentParser) -> None:
    add_cache_argument(parser)
    parser.add_argument("--idle-exit", type=float, metavar="S",
                        help="exit after S seconds without work (default: run until stopped)")
    parser.add_argument("--max-jobs", type=int, metavar="N", help="exit after N jobs")
    parser.add_argument("--stale-after", type=float, metavar="S",
                        help="requeue running jobs whose worker was silent this long (default 30)")
    parser.add_argument("--heartbeat", type=float, metavar="S", help="heartbeat interval (default 5)")
    parser.add_argument("--poll", type=float, default=1.0, metavar="S", help="queue polling interval")
    parser.add_argument("--worker-id", help=argparse.SUPPRESS)
    add_executor_arguments(parser, default="ray if $TWO_STAGE_RAY_ADDRESS is set, else local; a job submitted "
                                           "with --executor keeps its own")


@command("worker", "run queued jobs in this process (Ctrl-C hands the current job back)", _worker_arguments)
def _worker(args: argparse.Namespace) -> int:
    from ..training.cluster import require_ray, worker_default
    from ..jobs.worker import Worker

    executor = executor_from_args(args) or worker_default()
    if executor.kind == "ray":
        require_ray()  # a worker meant for a cluster says at once, not at its first job, that Ray is missing
    worker = Worker(args.cache, worker_id=args.worker_id, idle_exit=args.idle_exit,
                    stale_after=args.stale_after, heartbeat=args.heartbeat, poll=args.poll,
                    max_jobs=args.max_jobs, executor=executor)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    worker.install_signal_handlers()
    try:
        return worker.run()
    except KeyboardInterrupt:
        return 130
    finally:  # the command may run inside a longer-lived process (a test, a notebook): give Ctrl-C back
        for sig, handler in previous.items():
            signal.signal(sig, handler)
