"""What the app lists: the shipped reference first, then the user's runs; deep-link ids that tell the two apart
when they hold the same experiment; short labels that say what differs from the paper; the provenance every
number carries; the models Classify can load."""

from __future__ import annotations

import json

import pytest

from core.app import catalog, reference
from core.protocol.config import Protocol
from core.results.store import RunStore

from .test_store import record


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A reference folder with one bundle (records only) of the paper's Fashion-MNIST protocol, 2 repeats."""
    folder = tmp_path / "reference"
    (folder / "fashion-mnist").mkdir(parents=True)
    runs = [record(Protocol(), r) for r in range(2)]
    (folder / "fashion-mnist" / "records.json").write_text(json.dumps(runs))
    monkeypatch.setattr(reference, "REFERENCE_DIR", folder)
    return folder


def test_the_reference_is_listed_first_and_a_shared_key_gets_two_ids(shipped, tmp_path):
    store = RunStore(tmp_path / "cache")
    store.put(record(Protocol(), 0))  # the user ran the same experiment
    store.put(record(Protocol(epochs=3, limit=100), 0))
    exps = catalog.experiments(store)
    assert [e.source for e in exps] == [catalog.REFERENCE, catalog.CACHE, catalog.CACHE]
    ids = [catalog.experiment_id(e, exps) for e in exps]
    assert ids[0] == f"{Protocol().key()}-reference" and ids[1] == Protocol().key()
    assert catalog.find_experiment(exps, ids[0]) is exps[0] and catalog.find_experiment(exps, ids[1]) is exps[1]
    assert catalog.find_experiment(exps, "nothing") is None
    assert catalog.best_experiment(exps, "fashion-mnist") is exps[0]  # most repeats


def test_labels_say_what_differs_from_the_paper(shipped):
    assert catalog.protocol_summary(Protocol()) == "paper protocol"
    assert catalog.protocol_summary(Protocol(epochs=3, limit=1000, reduce_lr=True)) == \
        "3 epochs, 1,000 training images, ReduceLROnPlateau"
    exp = catalog.experiments()[0]
    assert catalog.experiment_label(exp) == "2 repeats · shipped · paper protocol · 2025-01-01"
    assert catalog.protocol_differences([Protocol(), Protocol(epochs=3, seed=1)]) == ["epochs", "seed"]


def test_the_longest_shipped_label_fits_the_results_pages_experiment_box():
    """Face Mask v2's label was cut in the Results page's box (three quarters of a 1280 px page); the box now has
    the page's width (about 850 px there, some 7.5 px a character) and the label says "shipped" in short."""
    v2 = Protocol.paper_v2(resplit=True, engine="lockstep")
    exp = catalog.Experiment(v2.key(), v2, [{"finished_at": "2026-11-23T00:00:00"}] * 20, catalog.REFERENCE)
    assert len(catalog.experiment_label(exp)) * 7.5 <= 850, catalog.experiment_label(exp)


def test_every_number_carries_its_provenance(shipped):
    runs = catalog.experiments()[0].runs
    line = catalog.provenance_line(runs, "reference")
    assert line.startswith("2 repeats · protocol: fashion-mnist") and "backend tensorflow on cpu" in line
    assert line.endswith("2025-01-01 · reference") and catalog.provenance_line([]) == "no repeats"


def test_classify_lists_the_users_models_but_not_a_frozen_backbones(tmp_path, monkeypatch):
    monkeypatch.setattr(reference, "REFERENCE_DIR", tmp_path / "none")
    store = RunStore(tmp_path / "cache")
    for protocol in (Protocol(), Protocol(dataset="cifar10", architecture="002-resnet18")):
        run = record(protocol, 0)
        run["dataset"]["input_shape"] = [28, 28, 1]
        store.put(run)
        folder = store.workdir(protocol.key(), 0)
        folder.mkdir(parents=True)
        for name in ("stage1.keras", "head_adam.keras", "head_sgd.keras"):
            (folder / name).write_bytes(b"model")
    choices = catalog.models(store)
    assert [c.dataset for c in choices] == ["fashion-mnist"] and not choices[0].shipped
    assert "your run" in choices[0].label and "test accuracy 80.0 % (CNN)" in choices[0].label
    assert catalog.model_chooser(choices) is None  # no chooser shipped here


def test_provenance_words_the_protocol_as_the_current_code_does():
    """Records made before the image size was described still say "64x64 px" where they ran at that size."""
    protocol = Protocol(dataset="dogs-cats", image_size=64, limit=1000)
    run = {"protocol": protocol.to_dict(), "describe": "dogs-cats, 1000 training images", "env": {},
           "finished_at": "2026-12-07T01:00:00+00:00"}
    assert "64x64 px" in catalog.provenance([run])["protocol"]
    broken = {**run, "protocol": {"dataset": "no-such-dataset"}}
    assert catalog.provenance([broken])["protocol"] == "dogs-cats, 1000 training images"
