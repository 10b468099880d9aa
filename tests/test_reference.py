"""The shipped bundle: built from a real stored run, listed by the catalog next to the user's runs."""

import json

import pytest

from core import catalog, reference
from core.cli import main
from core.experiment import run_experiment
from core.config import Protocol
from core.store import RunStore

from .conftest import needs_fashion


@needs_fashion
def test_bundle_round_trip(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "cache")
    protocol = Protocol(epochs=1, limit=200, test_limit=100)
    runs = run_experiment(protocol, 3, store)
    assert main(["bundle", "--cache", str(store.root), "--dest", str(tmp_path / "ref")]) == 0
    bundle = tmp_path / "ref" / "fashion-mnist"
    assert json.loads((bundle / "records.json").read_text()) == json.loads(json.dumps(runs))
    info = reference.model_info(bundle)
    median = sorted(runs, key=lambda r: r["stage1"]["last"]["test_accuracy"])[1]["repeat"]
    assert info["repeat"] == median and info["input_shape"] == [28, 28, 1]

    monkeypatch.setattr(reference, "REFERENCE_DIR", tmp_path / "ref")
    listed = catalog.experiments(store)
    assert [e.source for e in listed] == [catalog.REFERENCE, catalog.CACHE]
    assert "3 repeat(s)" in listed[0].label
    models = catalog.models(store)
    assert models[0].source == catalog.REFERENCE and len(models) == 1 + 3


def test_an_empty_cache_cannot_be_bundled(tmp_path, capsys):
    assert main(["bundle", "--cache", str(tmp_path)]) == 2
    assert "no finished experiment" in capsys.readouterr().err


def test_the_repository_bundle_if_present_is_complete():
    for bundle in reference.bundles():
        runs = reference.load_runs(bundle)
        assert runs and all(r["env"]["device"] and r["env"]["versions"] for r in runs)
        info = reference.model_info(bundle)
        assert info is not None, f"{bundle} lacks its models"
        assert sum(p.stat().st_size for p in info["paths"].values()) < 5e6
    if not reference.bundles():
        pytest.skip("no reference bundle shipped yet")
