"""Repeats as Ray tasks (``--executor ray``, core/training/cluster.py), on a local Ray instance standing in for a cluster.

The training tests share one Ray instance (started once, shut down at the end of the module) and one 2-repeat
run submitted as a job, so the file stays within a few minutes on a 2-core machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time

import pytest

from core.cli import main as cli
from core.training import cluster
from core.training import experiment
from core.protocol.config import Protocol
from core.jobs.queue import JobQueue
from core.training.leases import Leases
from core.results.store import RunStore
from core.jobs.worker import execute

from .conftest import needs_fashion

TINY = Protocol(dataset="fashion-mnist", epochs=1, limit=200, test_limit=100)
SMALL_OPTIONS = ["--dataset", "fashion-mnist", "--repeats", "2", "--epochs", "1", "--limit", "200",
                 "--test-limit", "100"]


def key_paths(value, prefix: tuple = ()) -> set[tuple]:
    """Every path of nested dict keys in a record: its schema, without the numbers."""
    if not isinstance(value, dict):
        return {prefix}
    return {prefix}.union(*(key_paths(v, prefix + (k,)) for k, v in value.items()))


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=cluster.runtime_env(),
             object_store_memory=200 * 2**20)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def job_run(ray_instance, tmp_path_factory):
    """A 2-repeat job submitted with ``executor: ray`` and run by the worker's ``execute``, as the app's
    background worker would; returns the cache, the records and every progress event the worker saw."""
    root = tmp_path_factory.mktemp("ray-cache")
    queue = JobQueue(root)
    job = queue.job(queue.submit(TINY, 2, executor=cluster.Executor("ray").to_dict()))
    events: list[dict] = []
    execute(job, queue.store, events.append, lambda: False)
    return root, queue.store.runs(TINY.key()), events


# -------------------------------------------------------------------------------------------- training
@needs_fashion
@pytest.mark.slow
def test_ray_records_have_the_schema_of_a_local_run_and_their_models_are_stored(job_run, tmp_path):
    root, records, _events = job_run
    local = experiment.run_experiment(TINY, 1, RunStore(tmp_path / "local"))[0]
    assert [r["repeat"] for r in records] == [0, 1]
    for record in records:
        assert key_paths(record) == key_paths(local)
        assert record["key"] == local["key"] and record["stage1"]["epochs_run"] == 1
    assert records[0]["seed"] == local["seed"] and records[0]["dataset"] == local["dataset"]
    store = RunStore(root)
    assert all(store.model_paths(TINY.key(), r) for r in (0, 1))
    leases = Leases(root)
    assert all(leases.holder(TINY.key(), r) is None for r in (0, 1))  # the driver let go of every lease
    leases.close()


@needs_fashion
@pytest.mark.slow
def test_tasks_report_every_epoch_of_their_repeat_before_it_is_stored(job_run):
    _root, _records, events = job_run
    for repeat in (0, 1):
        mine = [e for e in events if e.get("repeat") == repeat]
        started = [e for e in mine if e["stage"] == "repeat"]
        assert len(started) == 1 and started[0]["node"] and started[0]["pid"] != os.getpid()
        epochs = [e["stage"] for e in mine if "epoch" in e]
        assert epochs == ["stage1", "stage2_adam", "stage2_sgd"]
        assert mine[-1]["stage"] == "stored"  # relayed in order: the last epoch arrives before "stored"


@needs_fashion
@pytest.mark.slow
def test_a_second_call_sends_no_task(job_run, monkeypatch):
    root, records, _events = job_run

    def must_not_send(*args, **kwargs):
        raise AssertionError("a stored repeat was sent to the cluster")

    monkeypatch.setattr(cluster, "run_repeats", must_not_send)
    events: list[dict] = []
    again = experiment.run_experiment(TINY, 2, RunStore(root), progress=events.append, executor="ray")
    assert again == records and events == []


@needs_fashion
@pytest.mark.slow
def test_a_task_killed_mid_repeat_is_retried_and_stores_one_complete_record(ray_instance, tmp_path):
    """The task's process is SIGKILLed after its first stage-one epoch (as when a node is lost): Ray re-runs
    it in a new process, and the driver stores exactly one record, with every epoch of the repeat."""
    protocol = TINY.with_(epochs=4)
    pids: list[int] = []
    killed: list[int] = []

    def kill_the_first_attempt(event: dict) -> None:
        if event["stage"] == "repeat":
            pids.append(event["pid"])
        elif event["stage"] == "stage1" and "epoch" in event and not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    store = RunStore(tmp_path / "cache")
    records = experiment.run_experiment(protocol, 1, store, progress=kill_the_first_attempt,
                                        executor=cluster.Executor("ray", retries=2))
    assert killed and len(pids) == 2 and pids[1] != pids[0]  # the retry ran in a new process
    assert store.runs(protocol.key()) == records and len(records) == 1
    assert records[0]["stage1"]["history"]["epoch"] == [1, 2, 3, 4]
    assert store.model_paths(protocol.key(), 0)


@needs_fashion
@pytest.mark.slow
def test_should_stop_cancels_the_running_task_and_stores_nothing(ray_instance, tmp_path):
    protocol = TINY.with_(epochs=30)
    store = RunStore(tmp_path / "cache")
    events: list[dict] = []
    with pytest.raises(experiment.Stopped) as stopped:
        experiment.run_experiment(protocol, 1, store, progress=events.append, executor="ray",
                                  should_stop=lambda: any("epoch" in e for e in events))
    assert stopped.value.interrupted == [0] and store.runs(protocol.key()) == []
    leases = Leases(store.root)
    assert leases.holder(protocol.key(), 0) is None
    leases.close()
    log = cluster.node_scratch(cluster.scratch_name(store), protocol.key()) / "0000" / "stage1_epochs.jsonl"
    epochs = log.read_text().count("\n")
    time.sleep(3)  # uncancelled, a 200-image epoch takes about a second here: the log would grow
    assert log.read_text().count("\n") == epochs < protocol.epochs
    shutil.rmtree(log.parent.parent.parent, ignore_errors=True)  # scratch is kept for a resume; not here


# ----------------------------------------------------------------------------------- without training
def test_executor_ray_without_ray_installed_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if it were not installed
    assert cli.main(["run", *SMALL_OPTIONS, "--cache", str(tmp_path / "c"), "--executor", "ray"]) == 2
    assert cli.main(["worker", "--cache", str(tmp_path / "c"), "--executor", "ray"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: --executor ray needs Ray, which is not installed: {cluster.INSTALL_HINT}"] * 2


def test_submit_keeps_the_executor_in_the_job_not_in_the_protocol(tmp_path, monkeypatch):
    cache = str(tmp_path / "c")
    assert cli.main(["submit", *SMALL_OPTIONS, "--cache", cache, "--no-worker", "--ray-address", "head:6379",
                     "--ray-gpus", "0.25"]) == 0
    assert cli.main(["submit", *SMALL_OPTIONS, "--seed", "7", "--cache", cache, "--no-worker"]) == 0
    jobs = JobQueue(cache).jobs()
    with_ray, plain = (next(j for j in jobs if bool(j["executor"]) == chosen) for chosen in (True, False))
    assert with_ray["key"] == TINY.key()  # the executor did not change the protocol key
    assert cluster.job_executor(with_ray) == cluster.Executor("ray", "head:6379", gpus=0.25)
    assert plain["executor"] is None
    assert cluster.job_executor(plain, cluster.Executor("ray", "cli:1")) == cluster.Executor("ray", "cli:1")
    monkeypatch.setenv(cluster.RAY_ADDRESS_ENV, "env:6379")
    assert cluster.job_executor(plain) == cluster.Executor("ray", "env:6379")
    monkeypatch.delenv(cluster.RAY_ADDRESS_ENV)
    assert cluster.job_executor(plain) == cluster.Executor("local")
