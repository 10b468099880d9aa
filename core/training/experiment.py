"""An experiment: one protocol, N repeats, each stored as soon as it finishes and never trained twice.

This is the one loop over repeats: the CLI's ``run``, the job queue's workers and the benchmarks all call
:func:`run_experiment`, so the engine choice (``plain`` or ``lockstep``), the per-repeat split (``resplit``),
the executor (this process, or tasks on a Ray cluster: :mod:`core.training.cluster`) and the leases that stop two
processes from training the same repeat live here and nowhere else.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Callable

from ..data.datasets import Dataset, RawData, load_raw, split_raw
from ..protocol.config import Protocol
from ..protocol.words import repeats_named
from ..results.store import RunStore
from .leases import Leases
from .record import Cancelled, Progress
from .two_stage import run_repeat

if TYPE_CHECKING:
    from .cluster import Executor

WAIT_POLL_S = 2.0
"""How often a run waiting for another process's repeats looks again."""


class Stopped(Exception):
    """``should_stop`` turned true; ``interrupted`` lists the repeats that were training (none between repeats;
    several where the lock-step engine trains them together)."""

    def __init__(self, *interrupted: int | None):
        self.interrupted = [r for r in interrupted if r is not None]
        super().__init__(f"stopped during {repeats_named(self.interrupted)}" if self.interrupted
                         else "stopped between repeats")


def missing_repeats(store: RunStore, protocol: Protocol, repeats: int) -> list[int]:
    return [i for i in range(repeats) if not store.has(protocol, i)]


class DataSource:
    """Loads the dataset once, on first use, and hands each repeat its split (a new one with ``resplit``)."""

    def __init__(self, protocol: Protocol, report: Progress, data: Dataset | None = None):
        if data is not None and protocol.resplit:
            raise ValueError("a pre-split dataset cannot be re-split per repeat; pass no data with resplit")
        self.protocol, self.report, self.data = protocol, report, data
        self.raw: RawData | None = None

    def for_repeat(self, repeat: int) -> Dataset:
        if self.data is not None and not self.protocol.resplit:
            return self.data
        if self.raw is None:
            self.report({"stage": "loading", "dataset": self.protocol.dataset})
            p = self.protocol
            self.raw = load_raw(p.dataset, p.data_path, p.image_size)
        if not self.protocol.resplit:
            self.data = split_raw(self.raw, self.protocol)
            self.raw = None  # the split owns the buffer now
            return self.data
        return split_raw(self.raw, self.protocol, repeat, copy=True)


def check_engine(protocol: Protocol) -> None:
    """Raise ``core.training.lockstep.EngineUnavailable`` (a ValueError: one line, exit 2 in the CLI) when the
    protocol's engine cannot run here, before any data is loaded."""
    if protocol.engine == "lockstep":
        from . import lockstep

        lockstep.check_available(protocol)


def run_experiment(protocol: Protocol, repeats: int, store: RunStore, *,
                   progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                   data: Dataset | None = None,
                   after_store: Callable[[dict[str, Any]], None] | None = None,
                   executor: str | Executor = "local") -> list[dict[str, Any]]:
    """Run the repeats that are not stored yet; return all ``repeats`` records in order.

    The dataset is loaded only when something has to be trained, so a fully cached experiment returns at
    once. Each repeat is stored the moment it ends: an interrupt loses at most the repeat in progress. A
    repeat another process is training (it holds the lease) is not started again: this run trains the
    others, then waits for it, and takes it over if that process dies. Raises :class:`Stopped` when
    ``should_stop`` turns true.

    ``executor`` ``"ray"`` (or a :class:`core.training.cluster.Executor`) sends each missing repeat to a Ray cluster as
    one task; the records and models land in ``store`` exactly as a local run leaves them.
    """
    key = protocol.key()
    report = progress or (lambda event: None)
    stop = should_stop or (lambda: False)
    pending = missing_repeats(store, protocol, repeats)
    if pending:
        check_engine(protocol)
        chosen = _executor(executor)
        source = DataSource(protocol, report, data)
        leases = Leases(store.root)
        try:
            _train_pending(protocol, repeats, pending, store, source, leases, report, stop, after_store, chosen)
        finally:
            leases.close()
    return [store.get(key, i) for i in range(repeats)]


def _executor(executor: str | Executor) -> Executor | None:
    """None for a local run; a Ray executor only once Ray is known to be importable (a one-line
    ``ClusterError`` otherwise, before any data is loaded)."""
    from . import cluster

    chosen = executor if isinstance(executor, cluster.Executor) else cluster.Executor(executor)
    if chosen.kind == "local":
        return None
    cluster.require_ray()
    return chosen


def _train_pending(protocol: Protocol, repeats: int, pending: list[int], store: RunStore, source: DataSource,
                   leases: Leases, report: Progress, stop: Callable[[], bool],
                   after_store: Callable[[dict[str, Any]], None] | None, executor: Executor | None) -> None:
    key = protocol.key()
    announced: set[int] = set()
    while pending:
        if stop():
            raise Stopped(None)
        claimed = []
        for repeat in list(pending):
            if store.has(protocol, repeat):
                pending.remove(repeat)
                report({"stage": "stored", "repeat": repeat, "by": "another process"})
            elif leases.claim(key, repeat):
                claimed.append(repeat)
        if claimed:
            trained = (_train_on_cluster(protocol, repeats, claimed, store, source, leases, report, stop, executor)
                       if executor is not None else
                       _train(protocol, repeats, claimed, store, source, leases, report, stop))
            # closing: should storing fail, the generator's clean-up (leases, Ray tasks) runs now, not at GC.
            with contextlib.closing(trained):
                for record in trained:
                    record["repeats_requested"] = repeats
                    store.put(record)
                    report({"stage": "stored", "repeat": record["repeat"]})
                    if after_store is not None:
                        after_store(record)
                    pending.remove(record["repeat"])
            continue
        for repeat in pending:
            if repeat not in announced:
                holder = leases.holder(key, repeat) or {}
                report({"stage": "waiting", "repeat": repeat, "holder_pid": holder.get("pid"),
                        "holder_host": holder.get("host")})
                announced.add(repeat)
        time.sleep(WAIT_POLL_S)


def _train(protocol: Protocol, repeats: int, claimed: list[int], store: RunStore, source: DataSource,
           leases: Leases, report: Progress, stop: Callable[[], bool]):
    """Yield the records of the claimed repeats, releasing each lease once its record is yielded."""
    key = protocol.key()
    if protocol.engine == "lockstep":
        from . import lockstep

        try:
            yield from lockstep.run_repeats(source.for_repeat, protocol, claimed, store.artefacts / key,
                                            progress=report, should_stop=stop)
        except Cancelled:
            raise Stopped(*claimed) from None
        finally:
            for repeat in claimed:
                leases.release(key, repeat)
        return
    for repeat in claimed:
        try:
            if stop():
                raise Stopped(repeat)
            report({"stage": "repeat", "repeat": repeat, "repeats": repeats})
            try:
                record = run_repeat(source.for_repeat(repeat), protocol, repeat, store.workdir(key, repeat),
                                    progress=lambda event, r=repeat: report({**event, "repeat": r}),
                                    should_stop=stop)
            except Cancelled:
                raise Stopped(repeat) from None
            yield record
        finally:
            leases.release(key, repeat)


def _train_on_cluster(protocol: Protocol, repeats: int, claimed: list[int], store: RunStore, source: DataSource,
                      leases: Leases, report: Progress, stop: Callable[[], bool], executor: Executor):
    """Yield the claimed repeats' records from Ray tasks. This process holds their leases meanwhile (its
    heartbeat keeps them), so no other run or worker trains them; each is released once yielded."""
    from . import cluster

    key = protocol.key()
    done: set[int] = set()
    try:
        for record in cluster.run_repeats(protocol, repeats, claimed, store, report, stop, executor,
                                          data=source.data):
            yield record
            done.add(record["repeat"])
            leases.release(key, record["repeat"])
    except Cancelled:
        raise Stopped(*sorted(set(claimed) - done)) from None
    finally:
        for repeat in claimed:
            leases.release(key, repeat)
