"""The loop over repeats: only what is missing is trained, each repeat is stored the moment it ends, a stop
keeps what finished, and each repeat gets its split (its own with resplit). Training itself is replaced by a
stand-in: these tests are about the loop, test_two_stage.py about a repeat."""

from __future__ import annotations

import numpy as np
import pytest

from core.protocol.config import Protocol
from core.results.store import RunStore
from core.training import experiment
from core.training.experiment import DataSource, Stopped, run_experiment

from .test_store import record


@pytest.fixture
def trained(monkeypatch) -> list[tuple[int, int]]:
    """Replace training with a record made at once; lists (repeat, training images) per repeat trained."""
    calls: list[tuple[int, int]] = []

    def run_repeat(data, protocol, repeat, workdir, progress=None, should_stop=None):
        calls.append((repeat, len(data.y_train)))
        return record(protocol, repeat)

    monkeypatch.setattr(experiment, "run_repeat", run_repeat)
    return calls


@pytest.fixture
def protocol(photo_folder) -> Protocol:
    return Protocol(dataset="folder", data_path=str(photo_folder), image_size=32, epochs=1)


def test_only_missing_repeats_train_and_each_is_stored_as_it_ends(protocol, trained, tmp_path):
    store = RunStore(tmp_path / "cache")
    store.put(record(protocol, 1))
    events, stored_when_reported = [], []

    def progress(event):
        events.append(event)
        if event["stage"] == "stored":
            stored_when_reported.append(store.has(protocol, event["repeat"]))

    runs = run_experiment(protocol, 3, store, progress=progress)
    assert [r["repeat"] for r in runs] == [0, 1, 2] and [repeat for repeat, _ in trained] == [0, 2]
    assert stored_when_reported == [True, True] and runs[0]["repeats_requested"] == 3
    assert [e["stage"] for e in events if e["stage"] in ("repeat", "stored")] == ["repeat", "stored"] * 2


def test_a_stored_experiment_returns_without_loading_its_data(protocol, trained, tmp_path, monkeypatch):
    store = RunStore(tmp_path / "cache")
    for repeat in range(2):
        store.put(record(protocol, repeat))
    monkeypatch.setattr(experiment, "load_raw", lambda *a, **k: pytest.fail("loaded the data"))
    assert [r["repeat"] for r in run_experiment(protocol, 2, store)] == [0, 1] and trained == []


def test_a_stop_keeps_the_finished_repeats_and_names_the_interrupted_one(protocol, trained, tmp_path):
    store = RunStore(tmp_path / "cache")
    with pytest.raises(Stopped) as stopped:
        run_experiment(protocol, 3, store, should_stop=lambda: bool(trained))
    assert stopped.value.interrupted == [1] and store.has(protocol, 0) and not store.has(protocol, 1)
    assert str(stopped.value) == "stopped during repeat 2"


def test_every_repeat_shares_one_split_unless_resplit(protocol):
    shared = DataSource(protocol, lambda event: None)
    assert shared.for_repeat(0) is shared.for_repeat(1)
    own = DataSource(protocol.with_(resplit=True), lambda event: None)
    first, second = own.for_repeat(0), own.for_repeat(1)
    assert len(first.y_train) == len(second.y_train)
    assert not np.array_equal(first.ids["train"], second.ids["train"])
    with pytest.raises(ValueError, match="re-split"):
        DataSource(protocol.with_(resplit=True), lambda event: None, data=first)
