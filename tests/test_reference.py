"""Shipped bundles: built from a real stored run, validated before anything changes, swapped in atomically,
listed by the catalog next to the user's runs; the repository's own bundles are complete and small."""

import json
import os
import shutil

import pytest

from core.app import catalog
from core.app import reference
from core.cli.main import main
from core.protocol.config import Protocol
from core.training.experiment import run_experiment
from core.results.store import RunStore

from .conftest import HAS_FASHION


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A cache holding a finished three-repeat Fashion-MNIST experiment (tiny: 200 images, 1 epoch)."""
    if not HAS_FASHION:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    store = RunStore(tmp_path_factory.mktemp("bundle") / "cache")
    runs = run_experiment(Protocol(epochs=1, limit=200, test_limit=100), 3, store)
    return store, runs


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def leftovers(root):
    return [p.name for p in root.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_bundle_round_trip(finished, tmp_path, monkeypatch):
    store, runs = finished
    assert main(["bundle", "--cache", str(store.root), "--dest", str(tmp_path / "ref")]) == 0
    bundle = tmp_path / "ref" / "fashion-mnist"
    assert json.loads((bundle / "records.json").read_text()) == json.loads(json.dumps(runs))
    info = reference.model_info(bundle)
    median = sorted(runs, key=lambda r: r["stage1"]["last"]["test_accuracy"])[1]["repeat"]
    assert info["repeat"] == median and info["input_shape"] == [28, 28, 1]
    assert info["ood_path"].name == "ood.npz"
    run = next(r for r in runs if r["repeat"] == median)
    # the shipped (float16) CNN scores what its record says on the same test split, and agrees with float32
    assert info["test_accuracy"]["stage1"] == pytest.approx(run["stage1"]["last"]["test_accuracy"], abs=0.011)
    storage = info["stage1_storage"]
    assert storage["agreement_with_float32"] >= 0.995 or storage["format"] == "float32 .keras"
    assert info["ood"]["test_flagged"] <= 0.02
    assert oct(bundle.stat().st_mode)[-3:] == "755" and not leftovers(tmp_path / "ref")

    monkeypatch.setattr(reference, "REFERENCE_DIR", tmp_path / "ref")
    listed = catalog.experiments(store)
    assert [e.source for e in listed] == [catalog.REFERENCE, catalog.CACHE]
    assert "3 repeats" in listed[0].label
    models = catalog.models(store)
    assert models[0].source == catalog.REFERENCE and len(models) == 1 + 3
    assert models[0].ood_path and all(m.ood_path is None for m in models[1:])
    assert all("test accuracy" in m.label and "%" in m.label for m in models)
    assert models[0].title == "Fashion-MNIST"


@pytest.mark.slow
def test_bad_requests_leave_the_old_bundle_untouched(finished, tmp_path, capsys, monkeypatch):
    """`bundle --repeat 99` once deleted reference/<dataset>/ before validating anything."""
    store, _ = finished
    dest = tmp_path / "ref"
    assert main(["bundle", "--cache", str(store.root), "--dest", str(dest)]) == 0
    before = snapshot(dest / "fashion-mnist")
    capsys.readouterr()

    assert main(["bundle", "--cache", str(store.root), "--dest", str(dest), "--repeat", "99"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--repeat 99" in err and len(err.splitlines()) == 1 and "Traceback" not in err

    empty = tmp_path / "not_fashion"
    empty.mkdir()
    assert main(["bundle", "--cache", str(store.root), "--dest", str(dest), "--data", str(empty)]) == 2
    assert "Nothing was changed" in capsys.readouterr().err

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(reference.compact, "save", disk_full)  # fails half-way through the build
    assert main(["bundle", "--cache", str(store.root), "--dest", str(dest)]) == 2
    assert "No space left" in capsys.readouterr().err
    monkeypatch.undo()

    assert main(["bundle", "--cache", str(store.root), "--dest", str(dest), "--name", "../escape"]) == 2
    assert "bundle name" in capsys.readouterr().err
    assert snapshot(dest / "fashion-mnist") == before and not leftovers(dest)


@pytest.mark.slow
def test_a_repeat_whose_models_were_pruned_is_refused(finished, tmp_path, capsys):
    store, runs = finished
    copy = tmp_path / "cache"
    shutil.copytree(store.root, copy)
    pruned = RunStore(copy)
    key = runs[0]["key"]
    shutil.rmtree(pruned.workdir(key, 0))
    assert main(["bundle", "--cache", str(copy), "--dest", str(tmp_path / "ref"), "--repeat", "1"]) == 2
    err = capsys.readouterr().err
    assert "--repeat 1: that repeat" in err and "kept no models" in err  # numbered from 1, as people read it
    assert not (tmp_path / "ref" / "fashion-mnist").exists()


@pytest.mark.slow
def test_records_only_ships_the_records_and_no_models(finished, tmp_path, capsys):
    store, runs = finished
    dest = tmp_path / "ref"
    args = ["bundle", "--cache", str(store.root), "--dest", str(dest), "--name", "fmnist-records",
            "--key", runs[0]["key"]]
    assert main(args + ["--records-only", "--repeat", "1"]) == 2
    assert "--records-only ships none" in capsys.readouterr().err and not (dest / "fmnist-records").exists()
    assert main(args + ["--records-only"]) == 0
    bundle = dest / "fmnist-records"
    assert sorted(p.name for p in bundle.iterdir()) == ["records.json"]
    assert len(reference.load_runs(bundle)) == 3 and reference.model_info(bundle) is None


def test_the_final_rename_failing_puts_the_old_bundle_back(tmp_path, monkeypatch):
    old = tmp_path / "dogs-cats"
    old.mkdir()
    (old / "records.json").write_text("[]")
    new = tmp_path / ".dogs-cats.building-x"
    new.mkdir()
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(reference.os, "replace", replace)
    with pytest.raises(OSError):
        reference._swap_in(new, old)
    assert (old / "records.json").read_text() == "[]"


def test_bundle_names_follow_the_protocol(tmp_path):
    assert reference.bundle_name(Protocol()) == "fashion-mnist"
    assert reference.bundle_name(Protocol(dataset="dogs-cats", data_path="x")) == "dogs-cats"
    assert reference.bundle_name(Protocol(dataset="face-mask", data_path="x")) == "face-mask-v1"
    assert reference.bundle_name(Protocol.paper_v2(data_path="x")) == "face-mask-v2"
    store = RunStore(tmp_path / "cache")
    with pytest.raises(ValueError, match="no finished experiment"):
        reference.choose_experiment(store, "face-mask-v2")


def test_an_older_bundle_without_compact_models_or_statistics_is_still_read(tmp_path):
    bundle = tmp_path / "fashion-mnist"
    bundle.mkdir()
    for file in reference.LEGACY_MODEL_FILES.values():
        (bundle / file).write_bytes(b"")
    (bundle / "model.json").write_text(json.dumps({"repeat": 2, "key": "k", "class_names": ["a"],
                                                   "input_shape": [28, 28, 1], "dataset": "fashion-mnist"}))
    (bundle / "records.json").write_text("[]")
    (tmp_path / ".fashion-mnist.building-1").mkdir()  # a build in progress is never listed
    info = reference.model_info(bundle)
    assert info["paths"]["stage1"].name == "stage1.keras" and info["ood_path"] is None
    assert reference.bundles(tmp_path) == [bundle]


def test_an_empty_cache_cannot_be_bundled(tmp_path, capsys):
    assert main(["bundle", "--cache", str(tmp_path)]) == 2
    assert "no finished experiment" in capsys.readouterr().err


def test_the_repository_bundles_are_complete_and_small():
    assert reference.bundles(), f"no reference bundle in {reference.REFERENCE_DIR}"
    assert reference.total_size_mb() < reference.SIZE_BUDGET_MB
    with_models = set()
    for bundle in reference.bundles():
        runs = reference.load_runs(bundle)
        assert runs and all(r["env"]["device"] and r["env"]["versions"] for r in runs)
        info = reference.model_info(bundle)
        if info is None:  # shipped with --records-only: another bundle must carry this dataset's models
            continue
        with_models.add(info["dataset"])
        if "stage1_storage" in info:
            storage = info["stage1_storage"]
            assert storage["agreement_with_float32"] >= 0.995 or storage["format"] == "float32 .keras", bundle.name
            assert info["ood_path"] is not None, bundle.name
    datasets = {reference.load_runs(b)[0]["dataset"]["name"] for b in reference.bundles()}
    assert datasets == with_models, f"no bundle ships models for {datasets - with_models}"


@pytest.mark.parametrize("name", ["dogs-cats", "face-mask-v1"])  # v2 ships records only (v1's model)
def test_the_shipped_photo_cnns_agree_with_float32(name):
    """Measured by `python -m core bundle` on the repeat's whole test split, before shipping (the float32 model
    is not shipped, so this reads that measurement)."""
    bundle = reference.REFERENCE_DIR / name
    info = reference.model_info(bundle) if bundle.is_dir() else None
    assert info and "stage1_storage" in info, f"no compact {name} bundle in {reference.REFERENCE_DIR}"
    storage = info["stage1_storage"]
    assert storage["test_images"] >= 1000 and storage["agreement_with_float32"] >= 0.995
    assert info["paths"]["stage1"].suffix == ".npz" and storage["shipped_mb"] < 30


@pytest.mark.slow
def test_a_crafted_stage_one_file_is_one_line_and_nothing_is_created(finished, tmp_path, capsys):
    """A stage1.keras whose configuration names os.system: Keras' safe mode refuses it (nothing runs), and
    `bundle` says so in one line and leaves no folder behind (it once left an empty destination and printed
    two tracebacks)."""
    import zipfile

    store, runs = finished
    copy = tmp_path / "cache"
    shutil.copytree(store.root, copy)
    marker = tmp_path / "ran"
    for run in runs:
        path = RunStore(copy).model_paths(run["key"], run["repeat"])["stage1"]
        with zipfile.ZipFile(path) as z:
            files = {n: z.read(n) for n in z.namelist()}
        config = json.loads(files["config.json"])
        config.update(module="os", class_name="system", config={"command": f"touch {marker}"})
        files["config.json"] = json.dumps(config).encode()
        with zipfile.ZipFile(path, "w") as z:
            for n, data in files.items():
                z.writestr(n, data)
    dest = tmp_path / "new" / "ref"
    assert main(["bundle", "--cache", str(copy), "--dest", str(dest)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "Traceback"))]
    assert len(err) == 1 and "stage1.keras cannot be loaded" in err[0] and "Nothing was changed" in err[0]
    assert not (tmp_path / "new").exists() and not marker.exists()
