"""The background job queue: atomic claims, SIGKILL recovery, cancel, cached resubmission, failures, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.protocol.config import Protocol
from core.jobs.queue import JobQueue, apply_event
from core.results.store import PROJECT_ROOT, RunStore
from core.jobs.worker import Worker

from .conftest import needs_fashion

FAST = dict(heartbeat=0.2, poll=0.1)


def folder_protocol(photo_folder: Path, **changes) -> Protocol:
    return Protocol(**{"dataset": "folder", "data_path": str(photo_folder), "image_size": 32, "epochs": 1, **changes})


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_worker(cache: Path, log: Path, *args: str) -> subprocess.Popen:
    """``python -m core worker`` as a child of the test (so the test may kill it by pid)."""
    env = {**os.environ, "TWO_STAGE_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "core", "worker", "--cache", str(cache),
                                 "--heartbeat", "0.3", "--poll", "0.2", *args],
                                cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


# ----------------------------------------------------------------------------------------- claiming
RACER = """
import sys, time, json
from core.jobs.queue import JobQueue
q = JobQueue(sys.argv[1])
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
got = []
while True:
    job = q.claim(sys.argv[3], pid=None, host="racer")
    if job is None:
        break
    got.append(job["id"])
print(json.dumps(got))
"""


def test_processes_racing_for_jobs_each_job_is_won_exactly_once(cache_dir, photo_folder):
    q = JobQueue(cache_dir)
    one = q.submit(folder_protocol(photo_folder), 1)
    start = time.time() + 3.0  # all racers import first, then claim at the same instant
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(cache_dir), str(start), f"w{i}"],
                               cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True) for i in range(4)]
    won = [json.loads(p.communicate(timeout=60)[0]) for p in racers]
    assert sorted(sum(won, [])) == [one]  # exactly one process got the job
    job = q.job(one)
    assert job["state"] == "running" and job["attempts"] == 1 and job["worker"] in {f"w{i}" for i in range(4)}
    assert won[int(job["worker"][1:])] == [one]

    # several jobs, several racers: every job claimed once, none twice
    ids = [q.submit(folder_protocol(photo_folder, seed=s), 1) for s in range(1, 7)]
    start = time.time() + 3.0
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(cache_dir), str(start), f"v{i}"],
                               cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True) for i in range(3)]
    won = sum((json.loads(p.communicate(timeout=60)[0]) for p in racers), [])
    assert sorted(won) == sorted(ids)


def test_same_experiment_is_one_job_and_protocols_never_run_twice_at_once(cache_dir, photo_folder):
    q = JobQueue(cache_dir)
    p = folder_protocol(photo_folder)
    first = q.submit(p, 2)
    assert q.submit(p, 2) == first  # queued: same id
    more = q.submit(p, 3)  # same protocol, more repeats: its own job ...
    assert more != first
    assert q.claim("a")["id"] == first
    assert q.claim("b") is None  # ... which waits until the first is over (no repeat trains twice)
    assert q.submit(p, 2) == first  # running: same id


# ------------------------------------------------------------------------------------------ SIGKILL
@needs_fashion
@pytest.mark.slow
def test_worker_killed_with_sigkill_mid_job_is_resumed_by_another_worker(cache_dir, tmp_path):
    q = JobQueue(cache_dir, stale_after=3)
    p = Protocol(dataset="fashion-mnist", epochs=6, patience=10, limit=200, test_limit=100)
    job_id = q.submit(p, 1)
    log = tmp_path / "workers.log"
    first = start_worker(cache_dir, log, "--max-jobs", "1")
    try:
        wait_for(lambda: (j := q.job(job_id))["progress"].get("stage") == "stage1"
                 and j["progress"]["epoch"] >= 2, 120, "stage one epoch 2")
        meta = RunStore(cache_dir).workdir(p.key(), 0) / "backup_stage1" / "training_metadata.json"

        def backed_up() -> bool:  # epoch 2's backup is complete, so the kill lands mid-epoch 3
            try:
                return json.loads(meta.read_text())["epoch"] >= 2
            except (OSError, ValueError, KeyError):
                return False

        wait_for(backed_up, 60, "epoch 2's backup", interval=0.02)
        os.kill(first.pid, signal.SIGKILL)  # mid-epoch: no chance to clean up or hand back
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    killed_at = q.job(job_id)
    assert killed_at["state"] == "running" and killed_at["progress"]["epoch"] >= 2
    done_before = killed_at["progress"]["epoch"]

    second = start_worker(cache_dir, log, "--max-jobs", "1", "--stale-after", "3")
    try:
        job = wait_for(lambda: (j := q.job(job_id))["state"] not in ("queued", "running") and j, 180,
                       "the job to finish")
        assert second.wait(timeout=30) == 0
    finally:
        if second.poll() is None:
            second.kill()
    assert job["state"] == "done", (job["error"], job.get("detail"))
    assert job["attempts"] == 2
    resumed = [r for r in job["progress"]["resumed"] if r["stage"] == "stage1"]
    assert resumed and 1 <= resumed[0]["epoch"] <= done_before and resumed[0]["attempt"] == 2
    assert "resumed stage1 after epoch" in log.read_text()
    record = RunStore(cache_dir).get(p.key(), 0)
    assert record["stage1"]["history"]["epoch"] == [1, 2, 3, 4, 5, 6]
    assert all(record[m]["epochs_run"] >= 1 for m in ("adam", "sgd"))
    assert RunStore(cache_dir).model_paths(p.key(), 0) is not None
    assert q.workers() == []


@pytest.mark.slow
def test_sigterm_hands_the_running_job_back_to_the_queue(cache_dir, photo_folder, tmp_path):
    q = JobQueue(cache_dir)
    p = folder_protocol(photo_folder, epochs=500, patience=500)
    job_id = q.submit(p, 1)
    worker = start_worker(cache_dir, tmp_path / "worker.log")
    try:
        wait_for(lambda: q.job(job_id)["progress"].get("epoch", 0) >= 1, 120, "training to start")
        worker.send_signal(signal.SIGTERM)  # what a shutdown or reboot sends first
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    job = q.job(job_id)
    assert job["state"] == "queued" and job["worker"] is None and job["attempts"] == 0
    workdir = RunStore(cache_dir).workdir(p.key(), 0)
    # kept with the last whole epoch's backup, and no half epoch logged: the next worker resumes after it
    backed_up = json.loads((workdir / "backup_stage1" / "training_metadata.json").read_text())["epoch"]
    logged = (workdir / "stage1_epochs.jsonl").read_text().splitlines()
    assert backed_up >= 1 and len(logged) == backed_up
    assert q.workers() == []
    q.cancel(job_id)
    assert not RunStore(cache_dir).workdir(p.key(), 0).exists()


# ------------------------------------------------------------------------------------------- cancel
def test_cancel_a_queued_job(cache_dir, photo_folder):
    q = JobQueue(cache_dir)
    job_id = q.submit(folder_protocol(photo_folder), 2)
    assert q.cancel(job_id)
    assert q.job(job_id)["state"] == "cancelled"
    assert q.claim("w") is None
    assert not q.cancel(job_id)  # already over


@pytest.mark.slow
def test_cancel_a_running_job_leaves_no_record_and_no_files(cache_dir, photo_folder):
    q = JobQueue(cache_dir)
    p = folder_protocol(photo_folder, epochs=500, patience=500)
    job_id = q.submit(p, 1)
    worker = Worker(cache_dir, max_jobs=1, **FAST)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: q.job(job_id)["progress"].get("epoch", 0) >= 2, 120, "training to start")
        cohort = RunStore(cache_dir).artefacts / p.key() / "lockstep-0000-0000"  # as the lock-step engine leaves it
        cohort.mkdir(parents=True)
        (cohort / "state.npz").write_bytes(b"checkpoint")
        assert q.cancel(job_id)
        assert q.job(job_id)["state"] == "cancelled"  # every viewer sees it at once
    finally:
        thread.join(timeout=60)
    assert not thread.is_alive()
    job = q.job(job_id)
    assert job["state"] == "cancelled" and job["cleanup"] is False
    store = RunStore(cache_dir)
    assert store.get(p.key(), 0) is None
    assert not store.workdir(p.key(), 0).exists() and not cohort.exists()


def test_discarding_a_cancelled_repeat_removes_its_lock_step_checkpoint_and_nothing_stored(tmp_path):
    """A cancelled lock-step cohort (repeats 0-2 trained together) leaves no checkpoint behind; another
    cohort's checkpoint and a stored repeat's models stay."""
    store = RunStore(tmp_path)
    root = store.artefacts / "k"
    for name in ("lockstep-0000-0002", "lockstep-0003-0004", "0001", "0003"):
        (root / name).mkdir(parents=True)
    store.put({"key": "k", "repeat": 3, "protocol": Protocol().to_dict()})  # repeat 3 is stored
    assert store.discard_unfinished("k", 1) and not store.discard_unfinished("k", 3)
    assert sorted(p.name for p in root.iterdir()) == ["0003", "lockstep-0003-0004"]


# --------------------------------------------------------------------------------------- resubmission
@pytest.mark.slow
def test_resubmitting_a_finished_experiment_trains_nothing(cache_dir, photo_folder, monkeypatch):
    q = JobQueue(cache_dir)
    p = folder_protocol(photo_folder)
    first = q.submit(p, 2)
    Worker(cache_dir, max_jobs=1, **FAST).run()
    job = q.job(first)
    assert job["state"] == "done" and job["progress"]["repeats_done"] == 2, job["error"]
    assert [e["epoch"] for e in job["progress"]["history"]] == [1]
    records = RunStore(cache_dir).runs(p.key())

    import core.training.two_stage

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(core.training.two_stage, "run_repeat", no_training)
    again = q.submit(p, 2)
    assert again != first
    job = q.job(again)
    assert job["state"] == "done" and job["from_cache"] and job["progress"]["repeats_done"] == 2
    assert q.claim("w") is None  # nothing for a worker to do
    fewer = q.submit(p, 1)  # a subset is cached too
    assert q.job(fewer)["state"] == "done"
    assert RunStore(cache_dir).runs(p.key()) == records


# ------------------------------------------------------------------------------------------- failure
@pytest.mark.slow
def test_a_failing_job_reports_its_error_and_the_next_job_still_runs(cache_dir, photo_folder, tmp_path):
    q = JobQueue(cache_dir)
    bad = q.submit(Protocol(dataset="folder", data_path=str(tmp_path / "no-such-folder"), image_size=32,
                            epochs=1), 1)
    good = q.submit(folder_protocol(photo_folder), 1)
    Worker(cache_dir, max_jobs=2, **FAST).run()
    failed = q.job(bad)
    assert failed["state"] == "failed"
    assert "no-such-folder" in failed["error"] and "Traceback" not in failed["error"]
    assert q.job(good)["state"] == "done"
    assert RunStore(cache_dir).get(q.job(good)["key"], 0) is not None


def test_a_job_whose_workers_keep_dying_fails_instead_of_looping(cache_dir, photo_folder):
    q = JobQueue(cache_dir, stale_after=1, max_attempts=2)
    job_id = q.submit(folder_protocol(photo_folder), 1)
    for attempt in (1, 2):
        assert q.claim(f"w{attempt}", pid=None, host="elsewhere")["id"] == job_id
        q.recover(now=time.time() + 5)
    job = q.job(job_id)
    assert job["state"] == "failed" and "stopped 2 times in a row" in job["error"]


def test_workers_that_die_after_finishing_epochs_never_fail_the_job(cache_dir, photo_folder):
    """A long run on a machine switched off every few hours keeps going; only deaths without progress count."""
    q = JobQueue(cache_dir, stale_after=1, max_attempts=2)
    job_id = q.submit(folder_protocol(photo_folder), 1)
    for attempt in range(1, 6):
        assert q.claim(f"w{attempt}", pid=None, host="elsewhere")["id"] == job_id
        q.report(job_id, f"w{attempt}", {"stage": "stage1", "resumed_at_epoch": attempt - 1, "repeat": 0})
        q.report(job_id, f"w{attempt}", {"stage": "stage1", "epoch": attempt, "epochs": 9, "repeat": 0,
                                         "logs": {}})
        q.recover(now=time.time() + 5)
        assert q.job(job_id)["state"] == "queued"
    for attempt in (6, 7):  # then two deaths that finish nothing: it is probably killing its workers
        q.claim(f"w{attempt}", pid=None, host="elsewhere")
        q.report(job_id, f"w{attempt}", {"stage": "stage1", "resumed_at_epoch": 5, "repeat": 0})
        q.recover(now=time.time() + 5)
    job = q.job(job_id)
    assert job["state"] == "failed" and job["attempts"] == 7 and "stopped 2 times in a row" in job["error"]


def test_a_stale_job_is_requeued_by_whoever_looks(cache_dir, photo_folder):
    q = JobQueue(cache_dir, stale_after=1)
    job_id = q.submit(folder_protocol(photo_folder), 1)
    q.claim("gone", pid=None, host="elsewhere")
    assert q.beat("gone", job_id) == "ok"
    assert q.jobs()[0]["state"] == "running"
    time.sleep(1.3)
    assert q.jobs()[0]["state"] == "queued"  # jobs() noticed the silent worker
    assert q.beat("gone", job_id) == "lost"  # the old worker, if it wakes up, is fenced off
    assert not q.report(job_id, "gone", {"stage": "stage1", "epoch": 1, "epochs": 1, "logs": {}})
    assert not q.finish(job_id, "gone", "done")


# --------------------------------------------------------------------------------- progress and ETA
def test_progress_history_and_eta():
    progress = {"repeat": 0, "repeats": 2, "repeats_done": 0, "history": [], "epochs": 4}
    apply_event(progress, {"stage": "plan", "todo": [0, 1], "repeats": 2, "repeats_done": 0})
    apply_event(progress, {"stage": "repeat", "repeat": 0})
    for epoch in (1, 2, 3):
        apply_event(progress, {"stage": "stage1", "epoch": epoch, "epochs": 4, "repeat": 0,
                               "logs": {"accuracy": 0.5, "val_accuracy": 0.4, "loss": 1.0, "val_loss": 1.1,
                                        "seconds": 10.0, "learning_rate": 0.001}})
    assert [r["epoch"] for r in progress["history"]] == [1, 2, 3]
    assert set(progress["history"][0]) == {"epoch", "accuracy", "val_accuracy", "loss", "val_loss"}
    # rest of repeat 0: 1 stage-one epoch + 8 stage-two epochs at a tenth; repeat 1: 4 + 8 of those
    assert progress["eta_seconds"] == pytest.approx(10 + 8 * 1 + 40 + 8 * 1)
    apply_event(progress, {"stage": "stage1", "resumed_at_epoch": 2, "repeat": 0}, attempt=2)
    assert [r["epoch"] for r in progress["history"]] == [1, 2]
    assert progress["resumed"] == [{"repeat": 0, "stage": "stage1", "epoch": 2, "attempt": 2}]
    apply_event(progress, {"stage": "stored", "repeat": 0})
    assert progress["repeats_done"] == 1 and progress["todo"] == [1]


def test_the_live_curve_follows_one_repeat_when_several_train_at_once():
    """The lock-step engine reports repeats 0, 1, 2 for every epoch: the live curve is repeat 0's, whole, and
    moves on to repeat 1 when repeat 0 is stored (it used to restart at every event)."""
    progress = {"repeat": 0, "repeats": 3, "repeats_done": 0, "history": [], "epochs": 3}
    apply_event(progress, {"stage": "plan", "todo": [0, 1, 2], "repeats": 3, "repeats_done": 0})
    for epoch in (1, 2, 3):
        for repeat in (0, 1, 2):
            apply_event(progress, {"stage": "stage1", "epoch": epoch, "epochs": 3, "repeat": repeat,
                                   "logs": {"accuracy": 0.1 * (repeat + 1), "seconds": 1.0}})
    assert progress["repeat"] == 0 and [r["epoch"] for r in progress["history"]] == [1, 2, 3]
    assert {r["accuracy"] for r in progress["history"]} == {0.1}
    apply_event(progress, {"stage": "stored", "repeat": 2})  # a later repeat may finish first
    assert progress["repeats_done"] == 1 and progress["repeat"] == 0 and len(progress["history"]) == 3
    apply_event(progress, {"stage": "stored", "repeat": 0})
    apply_event(progress, {"stage": "stage2_adam", "epoch": 1, "epochs": 3, "repeat": 1, "logs": {}})
    assert progress["repeat"] == 1 and progress["stage"] == "stage2_adam" and len(progress["history"]) == 1


# ------------------------------------------------------------------------------------- cache hygiene
def test_cache_hygiene(cache_dir, photo_folder):
    q = JobQueue()  # the default cache: $TWO_STAGE_CACHE
    assert q.root == cache_dir
    for folder in (cache_dir, cache_dir / "jobs"):
        assert folder.stat().st_mode & 0o077 == 0
    assert q.db.eviction_policy == "none"
    job_id = q.submit(folder_protocol(photo_folder), 1)
    # values are JSON, never pickles: the raw row decodes as JSON
    import zlib

    (raw,) = q.db._sql("SELECT value FROM Cache WHERE key = ?", (q.db._disk.put(f"job/{job_id}")[0],)).fetchone()
    assert json.loads(zlib.decompress(raw))["id"] == job_id


def test_artefact_budget_prunes_oldest_finished_models_only(cache_dir):
    store = RunStore(cache_dir)
    for repeat in range(3):
        folder = store.workdir("k", repeat)
        folder.mkdir(parents=True)
        (folder / "stage1.keras").write_bytes(b"x" * 1000)
        os.utime(folder, (1000 + repeat, 1000 + repeat))
        if repeat < 2:
            store.put({"key": "k", "repeat": repeat, "protocol": {}})
    # repeat 2 has no record: it is a run in progress and is never pruned
    removed = store.prune_artefacts(1500)
    assert removed == [store.workdir("k", 0), store.workdir("k", 1)]
    assert store.workdir("k", 2).exists()
    assert store.get("k", 0) is not None  # the record stays
    assert store.prune_artefacts(None) == []


# ------------------------------------------------------------------------------------ workers and CLI
@pytest.mark.slow
def test_ensure_worker_starts_one_detached_worker(cache_dir):
    q = JobQueue(cache_dir)
    assert q.workers() == []
    assert q.ensure_worker(idle_exit=4)
    assert q.ensure_worker(idle_exit=4)  # the first one is alive (or starting): no second one
    (worker,) = q.workers()
    assert worker["pid"] and worker["host"]
    log = cache_dir / "jobs" / f"worker-{worker['pid']}.log"
    wait_for(lambda: "started" in log.read_text(), 60, "the worker to start")
    wait_for(lambda: not q.workers(), 60, "the idle worker to exit")
    assert "idle for" in log.read_text()


@pytest.mark.parametrize("users_own", [False, True])
def test_a_worker_the_server_starts_trains_without_the_servers_own_settings(cache_dir, monkeypatch, users_own):
    """The app's server turns oneDNN's kernels off for itself (memory, core.protocol.settings); a worker it starts
    trains as the command line does, unless the user set the variable themselves."""
    import core.jobs.queue as queue
    from core.protocol import settings

    for name in ("TF_ENABLE_ONEDNN_OPTS", settings.SERVER_SET):  # set, then unset: both are restored afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    if users_own:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    settings.apply_server_environment()
    settings.apply_server_environment()  # app.py runs again on every page view
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"  # the server's own process
    started = {}

    class Recorder:
        pid = 4242

        def __init__(self, cmd, **kwargs):
            started.update(kwargs["env"])

        def poll(self):
            return 0

    monkeypatch.setattr(queue.subprocess, "Popen", Recorder)
    queue.spawn_worker(cache_dir, idle_exit=1)
    assert settings.SERVER_SET not in started
    assert started.get("TF_ENABLE_ONEDNN_OPTS") == ("0" if users_own else None)


def test_cli_submit_jobs_cancel(cache_dir, photo_folder, capsys):
    from core.cli.main import main

    args = ["--dataset", "folder", "--data", str(photo_folder), "--image-size", "32", "--epochs", "1",
            "--repeats", "2"]
    assert main(["submit", *args, "--no-worker"]) == 0
    job_id = capsys.readouterr().out.strip()
    assert main(["submit", *args, "--no-worker"]) == 0
    assert capsys.readouterr().out.strip() == job_id
    assert main(["jobs"]) == 0
    out = capsys.readouterr().out
    assert job_id in out and "queued" in out
    assert main(["cancel", job_id[:6]]) == 0
    assert main(["cancel", job_id]) == 1
    assert main(["watch", job_id]) == 1  # it ended, not done
    assert "cancelled" in capsys.readouterr().out


def test_a_checkpoint_torn_by_a_kill_restarts_that_stage_instead_of_failing(tmp_path):
    from core.training.two_stage import repair_workdir

    good, torn = tmp_path / "backup_stage1", tmp_path / "backup_stage2_adam"
    for folder in (good, torn):
        folder.mkdir()
        (folder / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    import h5py
    import numpy as np

    with h5py.File(good / "latest.weights.h5", "w") as fh:
        fh["w"] = np.ones(3)
    (torn / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n torn")
    (tmp_path / "stage2_adam_epochs.jsonl").write_text('{"epoch": 1}\n')
    assert repair_workdir(tmp_path) == ["stage2_adam"]
    assert good.exists() and not torn.exists() and not (tmp_path / "stage2_adam_epochs.jsonl").exists()


def test_the_hourly_cap_counts_every_visitor_together(cache_dir, photo_folder, monkeypatch):
    """Demo mode's per-session rate lives in the browser session, so a new tab resets it; the queue's own
    hourly cap counts jobs in the shared database, across sessions, tabs and processes."""
    import dataclasses

    import core.protocol.settings
    from core.jobs.queue import QueueFull

    capped = dataclasses.replace(core.protocol.settings.DEMO, max_queued_jobs=None, submits_per_hour_total=2)
    monkeypatch.setattr(core.protocol.settings, "limits", lambda: capped)
    first, second = JobQueue(cache_dir), JobQueue(cache_dir)  # two visitors (any number of tabs each)
    for epochs in (1, 2):
        first.cancel(first.submit(folder_protocol(photo_folder, epochs=epochs), 1))  # cancelled still counts
    with pytest.raises(QueueFull, match="at most 2 new experiments per hour from all visitors"):
        second.submit(folder_protocol(photo_folder, epochs=3), 1)
    monkeypatch.setattr(core.protocol.settings, "limits", lambda: dataclasses.replace(capped, submits_per_hour_total=3))
    assert second.job(second.submit(folder_protocol(photo_folder, epochs=3), 1))["state"] == "queued"
