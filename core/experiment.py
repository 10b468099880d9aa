"""An experiment: one protocol, N repeats, each stored as soon as it finishes and never trained twice."""

from __future__ import annotations

from typing import Any, Callable

from .config import Protocol
from .datasets import Dataset, load_dataset
from .store import RunStore
from .two_stage import Progress, run_repeat


def missing_repeats(store: RunStore, protocol: Protocol, repeats: int) -> list[int]:
    return [i for i in range(repeats) if not store.has(protocol, i)]


def run_experiment(protocol: Protocol, repeats: int, store: RunStore, *,
                   progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                   data: Dataset | None = None) -> list[dict[str, Any]]:
    """Run the repeats that are not stored yet; return all ``repeats`` records in order.

    The dataset is loaded only when something has to be trained, so a fully cached experiment returns at
    once. Each repeat is stored the moment it ends: an interrupt loses at most the repeat in progress.
    """
    todo = missing_repeats(store, protocol, repeats)
    report = progress or (lambda event: None)
    if todo and data is None:
        report({"stage": "loading", "dataset": protocol.dataset})
        data = load_dataset(protocol)
    for repeat in todo:
        report({"stage": "repeat", "repeat": repeat, "repeats": repeats})
        record = run_repeat(data, protocol, repeat, store.workdir(protocol.key(), repeat),
                            progress=lambda event, r=repeat: report({**event, "repeat": r}),
                            should_stop=should_stop)
        store.put(record)
        report({"stage": "stored", "repeat": repeat})
    key = protocol.key()
    return [store.get(key, i) for i in range(repeats)]
