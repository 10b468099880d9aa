"""core.app.precise: shipped records get PreciseBN's reading from their own kept models, and only from those."""

from __future__ import annotations

import json

import pytest

from core.app.precise import ReadingMismatch, precise_file, precise_readings
from core.protocol.config import Protocol
from core.results.store import RunStore

from .conftest import synthetic_images, write_class_folders


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """A finished one-repeat experiment of the Dogs & Cats CNN (BatchNorm layers) at 32x32 px, models kept."""
    from core.training.experiment import run_experiment

    base = tmp_path_factory.mktemp("precise")
    images, labels = synthetic_images(24, 2, size=32)
    root = write_class_folders(base / "data", images, labels, ["cats", "dogs"])
    store = RunStore(base / "cache")
    protocol = Protocol(dataset="folder", data_path=str(root), image_size=32, epochs=1)
    run_experiment(protocol, 1, store)
    return store, store.runs(protocol.key())


def test_the_reading_is_added_and_nothing_else_changes(kept, tmp_path):
    store, runs = kept
    bundle = tmp_path / "records.json"
    bundle.write_text(json.dumps(runs))
    assert precise_file(bundle, store, iters=12) == 1  # fvcore's 200 batches in the shipped readings
    (after,) = json.loads(bundle.read_text())
    reading = after["stage1"].pop("precise_bn")
    assert after == json.loads(json.dumps(runs[0]))  # the record's own numbers are untouched
    assert 0 <= reading["test_accuracy"] <= 1 and 0 <= reading["bn_only_test_accuracy"] <= 1
    assert reading["iters"] == 12 and reading["batch_size"] == 32 and reading["weights"] == "last"
    assert reading["backend"] == "tensorflow" and "keras" in reading["versions"] and reading["added_at"]


def test_a_model_that_is_not_the_records_is_refused(kept):
    store, runs = kept
    wrong = json.loads(json.dumps(runs))
    wrong[0]["stage1"]["last"]["test_accuracy"] = 1.5  # no model scores that
    with pytest.raises(ReadingMismatch, match="repeat 1: the kept model scores .* it is not the model"):
        precise_readings(wrong, store)
    gone = json.loads(json.dumps(runs))
    gone[0]["key"] = "0" * 16
    with pytest.raises(ReadingMismatch, match="repeat 1: the cache kept no models for it"):
        precise_readings(gone, store)


def test_the_command_names_a_missing_bundle_in_one_line(tmp_path, capsys):
    from core.cli.main import main

    assert main(["precise-bn", "nope", "--dest", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'nope' / 'records.json'} does not exist"]
