"""A worker in this process: it claims a job, trains what is missing, stores it and marks the job done; a job
that fails says why in one line and the next job still runs; a stop hands the job back. Training itself is a
stand-in (tests/test_jobs.py runs real workers in processes)."""

from __future__ import annotations

import pytest

from core.data.datasets import DatasetUnavailable
from core.jobs.queue import JobQueue
from core.jobs.worker import Worker, error_text
from core.protocol.config import Protocol
from core.training import experiment

from .test_store import record


@pytest.fixture
def protocol(photo_folder) -> Protocol:
    return Protocol(dataset="folder", data_path=str(photo_folder), image_size=32, epochs=1)


def stand_in(fail_on: Protocol | None = None, on_epoch=None):
    """run_repeat that reports one epoch and returns a record, or raises MemoryError for ``fail_on``."""
    def run_repeat(data, protocol, repeat, workdir, progress=None, should_stop=None):
        if fail_on is not None and protocol == fail_on:
            raise MemoryError
        progress({"stage": "stage1", "epoch": 1, "epochs": 1, "logs": {"accuracy": 0.5, "seconds": 0.1}})
        if on_epoch is not None:
            on_epoch()
        return record(protocol, repeat)
    return run_repeat


def worker(cache, lines, **options) -> Worker:
    return Worker(cache, worker_id="w1", poll=0.05, heartbeat=0.05, log=lines.append, **options)


def test_a_job_is_trained_stored_and_done(cache_dir, protocol, monkeypatch):
    monkeypatch.setattr(experiment, "run_repeat", stand_in())
    queue = JobQueue(cache_dir)
    job_id = queue.submit(protocol, 2)
    lines: list[str] = []
    assert worker(cache_dir, lines, max_jobs=1).run() == 0
    job = queue.job(job_id)
    assert job["state"] == "done" and job["progress"]["repeats_done"] == 2
    assert [r["repeat"] for r in queue.store.runs(protocol.key())] == [0, 1]
    assert any("repeat 1 stage1 epoch 1/1" in line for line in lines) and lines[-1] == "stopped"
    assert queue.workers() == []


def test_a_failing_job_says_why_and_the_next_job_still_runs(cache_dir, protocol, monkeypatch):
    bad = protocol.with_(epochs=2)
    monkeypatch.setattr(experiment, "run_repeat", stand_in(fail_on=bad))
    queue = JobQueue(cache_dir)
    failing, fine = queue.submit(bad, 1), queue.submit(protocol, 1)
    worker(cache_dir, [], max_jobs=2).run()
    assert queue.job(failing)["state"] == "failed" and queue.job(failing)["error"].startswith("Out of memory")
    assert queue.job(fine)["state"] == "done"


def test_a_stopped_worker_hands_its_job_back(cache_dir, protocol, monkeypatch):
    lines: list[str] = []
    w = worker(cache_dir, lines, max_jobs=1)
    monkeypatch.setattr(experiment, "run_repeat", stand_in(on_epoch=w.shutdown.set))  # SIGTERM mid-repeat
    queue = JobQueue(cache_dir)
    job_id = queue.submit(protocol, 2)
    w.run()
    assert queue.job(job_id)["state"] == "queued" and queue.store.has(protocol, 0)
    assert any("handed back to the queue" in line for line in lines)


def test_error_text_is_one_line_a_user_can_act_on():
    assert error_text(DatasetUnavailable("No folder at /x.")) == "No folder at /x."
    assert error_text(MemoryError()).startswith("Out of memory while training")
    assert error_text(ValueError("bad value")) == "ValueError: bad value" and error_text(KeyError()) == "KeyError"


def test_a_job_queued_by_newer_code_fails_in_one_line_rather_than_running_another_experiment(
        cache_dir, protocol, monkeypatch):
    """An old worker once read a no-dropout job without its new field, found the paper-protocol repeats stored
    and marked the job done. A field this code does not know, set, now fails the job saying so."""
    monkeypatch.setattr(experiment, "run_repeat", stand_in())
    plain = Protocol.to_dict
    monkeypatch.setattr(Protocol, "to_dict", lambda self: {**plain(self), "future_option": True})
    queue = JobQueue(cache_dir)
    job_id = queue.submit(protocol, 1)
    monkeypatch.setattr(Protocol, "to_dict", plain)
    worker(cache_dir, [], max_jobs=1).run()
    job = queue.job(job_id)
    assert job["state"] == "failed" and "sets future_option, which this worker's code does not know" in job["error"]
    assert queue.store.runs(protocol.key()) == []
    assert Protocol.unknown_fields({**plain(protocol), "future_option": False, "other": None}) == []
