"""Run an experiment's missing repeats as tasks on a Ray cluster (``--executor ray``).

Why Ray: a full reproduction (four datasets x 20 repeats) outgrows one machine, and the job queue in
:mod:`core.jobs.queue` is built for one machine's workers. Rather than grow our own distributed engine, each missing
repeat becomes one Ray task; everything else stays where it is:

* **The driver** (the CLI's ``run`` or a job-queue worker) keeps :func:`core.training.experiment.run_experiment`'s one
  loop over repeats: it claims each repeat's lease, sends only repeats that are not stored, and holds their
  leases until their records are stored. It writes each returned model file into ``store.workdir(key, repeat)``
  and then ``store.put``s the record, exactly as a local run does, so nothing downstream changes. The cache
  (records and models) lives only on the driver's machine; nodes never see it.
* **A task** loads the dataset on its node (``core.data.datasets.load_dataset``, so ``resplit`` is honoured), or
  takes the copy the driver shipped once with ``ray.put`` (``ship_data``; for small sets or folders only the
  driver can read), trains in a node-local scratch folder with ``run_repeat`` (or the lock-step engine for a
  block of repeats) and returns the record plus the ``.keras`` files as bytes. It returns only when the repeat
  is complete, so the driver can never store a partial record.
* **Progress**: tasks push ``run_repeat``'s event dicts to a small actor (:class:`ProgressRelay`); the driver
  drains it while it waits and hands the events to its ``progress`` callback (the CLI printer, the job queue).
* **Failures**: a task whose process or node dies is retried by Ray (``max_retries``); its scratch folder lets a
  retry on the same node resume from the last finished epoch. A Python error in a task (a missing dataset) is
  re-raised on the driver as itself. Ctrl-C or ``should_stop`` cancels the outstanding tasks (``ray.cancel``).

Ray is optional (``requirements-cluster.txt``): this module imports it only inside functions, so importing it,
:class:`Executor` included, never needs Ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..protocol.words import repeats_named

if TYPE_CHECKING:
    from ..data.datasets import Dataset, RawData
    from ..protocol.config import Protocol
    from ..results.store import RunStore

EXECUTORS = ("local", "ray")
RAY_ADDRESS_ENV = "TWO_STAGE_RAY_ADDRESS"
"""Address of the Ray cluster a job-queue worker sends its jobs to; setting it makes ``ray`` the workers'
executor, so a job submitted from the app fans out."""
INSTALL_HINT = "pip install -r requirements-cluster.txt"
POLL_S = 0.5
"""How often the driver relays progress and checks ``should_stop`` while tasks run."""
CANCEL_GRACE_S = 5.0
"""How long cancelled tasks get to stop on their own (Ray raises KeyboardInterrupt in them, between two
batches) before their processes are killed."""
SCRATCH_DIR = "two-stage-ray"
"""Under the node's temp folder: where tasks train (``<tmp>/two-stage-ray/<cache id>/<key>/<repeat>``)."""


class ClusterError(ValueError):
    """Ray is missing, the cluster cannot be reached, or a task failed for good; the message is one line.

    A ValueError, so the CLI prints it as ``error: ...`` and exits 2 like any other problem the user must fix.
    """


@dataclasses.dataclass(frozen=True)
class Executor:
    """Where an experiment's repeats train, and with what resources per Ray task.

    Deliberately not part of :class:`~core.protocol.config.Protocol`: it changes where the numbers are computed, never
    what they are, so it must not change the protocol key (a repeat stored by a local run is never sent to the
    cluster, and the other way round).
    """

    kind: str = "local"
    address: str | None = None
    """Ray cluster address (``auto``, ``HOST:6379``, ``ray://HOST:10001``). None: ``$TWO_STAGE_RAY_ADDRESS``,
    else Ray's own rule (``$RAY_ADDRESS``, a Ray instance already running here, else a new local one)."""
    cpus: float = 1.0
    gpus: float = 0.0
    """Per task; fractional values share a device (0.25: four repeats per GPU)."""
    retries: int = 3
    """How often Ray re-runs a task whose process or node died (``max_retries``)."""
    ship_data: bool = False
    """Load the dataset once on the driver and ship it with ``ray.put`` instead of loading it on each node."""

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)} (got {self.kind!r})")
        if self.cpus < 0 or self.gpus < 0 or self.retries < 0:
            raise ValueError("--ray-cpus, --ray-gpus and --ray-retries must not be negative")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Executor:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def worker_default() -> Executor:
    """A job-queue worker's executor when neither the job nor the command line chose one."""
    address = os.environ.get(RAY_ADDRESS_ENV)
    return Executor("ray", address) if address else Executor()


def job_executor(job: dict[str, Any], fallback: Executor | None = None) -> Executor:
    """The executor ``submit`` stored in the job, else the worker's own (``fallback``, else the default)."""
    chosen = job.get("executor")
    if chosen:
        return Executor.from_dict(chosen)
    return fallback or worker_default()


def require_ray():
    """The ``ray`` module, or :class:`ClusterError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


# ---------------------------------------------------------------------------------------------- driver
def run_repeats(protocol: Protocol, repeats: int, claimed: list[int], store: RunStore,
                report: Callable[[dict[str, Any]], None], stop: Callable[[], bool], executor: Executor,
                data: Dataset | None = None) -> Iterator[dict[str, Any]]:
    """Train the ``claimed`` repeats as Ray tasks; yield each record once its models are in the store.

    The caller stores the record (``store.put``) and holds the repeats' leases. Raises
    :class:`~core.training.record.Cancelled` when ``stop()`` turns true, after cancelling every outstanding task.
    """
    from .record import Cancelled

    ray = require_ray()
    owned = _connect(ray, executor)
    running: dict[Any, list[int]] = {}
    relay = None
    try:
        relay = ray.remote(ProgressRelay).options(num_cpus=0).remote()
        shipped = _ship(ray, protocol, data, executor, report)
        task = ray.remote(train_block).options(num_cpus=executor.cpus, num_gpus=executor.gpus,
                                               max_retries=executor.retries, retry_exceptions=False)
        scratch = scratch_name(store)
        for block in _blocks(protocol, claimed):
            running[task.remote(protocol, block, repeats, relay, shipped, scratch)] = block
        while running:
            finished, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            relay = _relay_events(ray, relay, report)
            if stop():
                raise Cancelled("stopped")
            for ref in finished:
                yield from _deliver(_result(ray, ref, running.pop(ref), executor), store)
    finally:
        _cancel(ray, list(running))  # Ctrl-C, cancel or an error: nothing outstanding keeps training
        if relay is not None:
            ray.kill(relay)
        if owned:
            ray.shutdown()


def _cancel(ray, refs: list) -> None:
    """Stop every task in ``refs``: first by ``ray.cancel`` (a KeyboardInterrupt in the task, which stores
    nothing), then, for any still running after :data:`CANCEL_GRACE_S`, by killing its process. Ray's
    graceful cancel is best effort (one sent as a task starts can be lost), and a task it misses would train
    on to its last epoch after the user was told it stopped; a killed task is not retried."""
    if not refs:
        return
    for ref in refs:
        ray.cancel(ref)
    _, still_running = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
    for ref in still_running:
        ray.cancel(ref, force=True)


def _connect(ray, executor: Executor) -> bool:
    """Connect to the executor's cluster unless this process already did; True if we must shut it down.

    A caller that starts Ray itself (a test, a notebook) passes ``runtime_env=runtime_env()`` to
    ``ray.init``: Ray ships local folders only with the job, not per task.
    """
    if ray.is_initialized():
        return False
    address = executor.address or os.environ.get(RAY_ADDRESS_ENV) or None
    local = {} if address else {"include_dashboard": False}
    try:
        ray.init(address=address, runtime_env=runtime_env(), logging_level="WARNING", **local)
    except Exception as exc:  # noqa: BLE001 - whatever Ray raises, the user gets one line
        where = f"at {address}" if address else "here"
        raise ClusterError(f"cannot start or reach a Ray cluster {where}: {_first_line(exc)}") from None
    return True


def runtime_env() -> dict[str, Any]:
    """The Ray job's runtime environment: this checkout's ``core`` package (so the nodes run exactly the
    driver's code and need no checkout, only the same libraries) and the driver's Keras backend (records say
    which backend produced them, so all repeats of a run should agree)."""
    from . import env

    return {"py_modules": [str(Path(__file__).resolve().parents[1])],
            "env_vars": {"KERAS_BACKEND": env.backend()}}


def _ship(ray, protocol: Protocol, data: Dataset | None, executor: Executor,
          report: Callable[[dict[str, Any]], None]):
    """The object-store reference tasks read their data from, or None when each node loads its own."""
    if data is not None:  # a split dataset the caller already holds (never with resplit)
        return ray.put(data)
    if not executor.ship_data:
        return None
    from ..data.datasets import load_raw

    report({"stage": "loading", "dataset": protocol.dataset})
    return ray.put(load_raw(protocol.dataset, protocol.data_path, protocol.image_size))


def _blocks(protocol: Protocol, claimed: list[int]) -> list[list[int]]:
    """One task per repeat; the lock-step engine trains all its repeats in one program, so one task."""
    return [list(claimed)] if protocol.engine == "lockstep" else [[repeat] for repeat in claimed]


def scratch_name(store: RunStore) -> str:
    """Names the driver's cache on the nodes, so two caches training the same protocol never share a
    scratch folder, while a retried task finds its predecessor's checkpoints."""
    return hashlib.sha1(f"{socket.gethostname()}:{store.root.resolve()}".encode()).hexdigest()[:12]


def node_scratch(scratch: str, key: str) -> Path:
    """Where tasks of one cache and protocol train on a node; one ``<repeat:04d>`` folder per repeat."""
    return Path(tempfile.gettempdir()) / SCRATCH_DIR / scratch / key


def _relay_events(ray, relay, report: Callable[[dict[str, Any]], None]):
    """Hand the tasks' queued events to ``report``; returns the relay, or None once it is gone."""
    if relay is None:
        return None
    try:
        events = ray.get(relay.drain.remote())
    except ray.exceptions.RayActorError:  # its node died: training goes on, only progress goes quiet
        return None
    for event in events:
        report(event)
    return relay


def _result(ray, ref, block: list[int], executor: Executor) -> list[dict[str, Any]]:
    """A finished task's results; its own error re-raised as itself, Ray's failures as one line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        raise exc.cause from None
    except ray.exceptions.RayError as exc:
        raise ClusterError(
            f"{repeats_named(block)}: the Ray task failed "
            f"({type(exc).__name__}: {_first_line(exc)}; --ray-retries {executor.retries}); finished repeats "
            "are stored, run again to continue") from None


def _deliver(results: list[dict[str, Any]], store: RunStore) -> Iterator[dict[str, Any]]:
    """Write each result's model files into the store's folder for its repeat, then hand on its record."""
    for result in results:
        record = result["record"]
        _write_models(store.workdir(record["key"], record["repeat"]), result["files"])
        yield record


def _write_models(folder: Path, files: dict[str, bytes]) -> None:
    """Put a task's model files where a local run leaves them (atomically, so a reader never sees half)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        if Path(name).name != name:
            raise ClusterError(f"a task returned a model file with a path in its name: {name!r}")
        partial = folder / f".{name}.partial"
        partial.write_bytes(blob)
        os.replace(partial, folder / name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------- nodes
class ProgressRelay:
    """Ray actor between the tasks and the driver: tasks push event dicts, the driver drains them.

    Events from one task arrive in the order it sent them (Ray runs one caller's calls to a plain actor in
    submission order), which is what the job queue's progress folding assumes.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def push(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        return events

    def flush(self) -> None:
        """A task waits for this call before it returns: by then every event it pushed has arrived, so the
        driver relays a repeat's last epochs before it reports the repeat stored."""


def train_block(protocol: Protocol, block: list[int], repeats: int, relay, shipped: Dataset | RawData | None,
                scratch: str) -> list[dict[str, Any]]:
    """The Ray task: train ``block`` (one repeat; several for the lock-step engine) on this node.

    Returns ``[{"record": ..., "files": {"stage1.keras": bytes, ...}}]``, only once every repeat of the block
    is complete. The scratch folder survives a killed process, so a retry on the same node resumes from the
    last finished epoch; it is removed once the results are in memory.
    """
    import ray

    base = node_scratch(scratch, protocol.key())

    def report(event: dict[str, Any]) -> None:
        relay.push.remote(event)  # fire and forget: progress never slows training down

    for repeat in block:
        report({"stage": "repeat", "repeat": repeat, "repeats": repeats, "node": socket.gethostname(),
                "pid": os.getpid()})
    records = _train_here(protocol, block, base, shipped, report)
    results = [{"record": record, "files": _read_models(base / f"{record['repeat']:04d}")} for record in records]
    for repeat in block:
        shutil.rmtree(base / f"{repeat:04d}", ignore_errors=True)
    for folder in (base, base.parent):  # emptied folders go (another repeat may still be using them)
        with contextlib.suppress(OSError):
            folder.rmdir()
    try:
        ray.get(relay.flush.remote())
    except ray.exceptions.RayActorError:  # the relay's node died: the results still count
        pass
    return results


def _train_here(protocol: Protocol, block: list[int], base: Path, shipped: Dataset | RawData | None,
                report: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Run the block with the same engines a local run uses, in per-repeat folders laid out like the store's
    (``<key>/<repeat:04d>``)."""
    if protocol.engine == "lockstep":
        from . import lockstep

        return list(lockstep.run_repeats(lambda repeat: _dataset(protocol, repeat, shipped, report), protocol,
                                         block, base, progress=report))
    from .two_stage import run_repeat

    repeat = block[0]
    return [run_repeat(_dataset(protocol, repeat, shipped, report), protocol, repeat, base / f"{repeat:04d}",
                       progress=lambda event: report({**event, "repeat": repeat}))]


def _dataset(protocol: Protocol, repeat: int, shipped: Dataset | RawData | None,
             report: Callable[[dict[str, Any]], None]) -> Dataset:
    """The repeat's split: from the shipped copy (split here, on a copy: object-store arrays are read-only),
    else loaded from this node's disk (the path in the protocol must exist on every node)."""
    from ..data.datasets import RawData, load_dataset, split_raw

    if shipped is None:
        report({"stage": "loading", "dataset": protocol.dataset, "repeat": repeat})
        return load_dataset(protocol, repeat=repeat)
    if isinstance(shipped, RawData):
        return split_raw(shipped, protocol, repeat, copy=True)
    return shipped


def _read_models(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.keras"))}
