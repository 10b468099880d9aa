"""Submitting from the CLI or a page: the job is queued once, a worker is started only when none runs, and a
worker that cannot start never loses the job."""

from __future__ import annotations

import pytest

from core.cli.jobs import submit_job
from core.jobs.queue import JobQueue
from core.jobs.submit import submit_and_start
from core.protocol.config import Protocol


class FakeQueue:
    """A queue whose workers are whatever the test says: no process is started."""

    dir = "/cache/jobs"

    def __init__(self, alive: bool, starts: bool | Exception, state: str = "queued"):
        self.alive, self.starts, self.state, self.started = alive, starts, state, 0

    def submit(self, protocol, repeats, **options):
        return "job1"

    def job(self, job_id):
        return {"id": job_id, "state": self.state, "describe": "fashion-mnist, 1 epochs max", "repeats": 2}

    def workers(self):
        return [{"id": "w"}] if self.alive else []

    def ensure_worker(self):
        if isinstance(self.starts, Exception):
            raise self.starts
        self.started += 1
        return self.alive or self.starts


@pytest.mark.parametrize("alive,starts,state,worker,line", [
    (True, True, "queued", "running", "a worker is running"),
    (False, True, "queued", "started", "started a local worker (log in /cache/jobs)"),
    (False, False, "queued", "none", "no worker could be started; run `python -m core worker`"),
    (False, OSError("fork failed"), "queued", "failed", "starting a worker failed (fork failed)"),
    (False, True, "done", "not needed", None),
])
def test_the_worker_outcome_and_what_the_cli_says(alive, starts, state, worker, line, capsys):
    queue = FakeQueue(alive, starts, state)
    submitted = submit_and_start(queue, Protocol(), 2)
    assert submitted.job_id == "job1" and submitted.worker == worker
    assert submit_job(FakeQueue(alive, starts, state), Protocol(), 2, label="step") == "job1"
    out, err = capsys.readouterr()
    assert out == "job1  step\n"
    assert (line in err) if line else err.count("\n") == 1


def test_without_a_worker_the_job_is_only_queued(tmp_path):
    queue = JobQueue(tmp_path / "cache")
    protocol = Protocol(epochs=1, limit=100, test_limit=100)
    submitted = submit_and_start(queue, protocol, 2, start_worker=False)
    assert submitted.worker == "not needed" and submitted.job["state"] == "queued"
    again = submit_and_start(queue, protocol, 2, start_worker=False)
    assert again.job_id == submitted.job_id and len(queue.jobs()) == 1  # the same experiment is one job
