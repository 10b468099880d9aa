"""The lock-step engine (core/training/lockstep.py): all repeats as one JAX program, with the plain path's callbacks and
records.

The suite runs Keras on TensorFlow, so everything that trains with the engine runs in a subprocess under
``KERAS_BACKEND=jax`` (``tests/lockstep_probe.py``, or ``python -m core run --engine lockstep``); the plain
path's side of each comparison runs here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from core.models.models import build_head
from core.protocol.config import Protocol
from core.protocol.vocabulary import SPLITS
from core.training import record, two_stage

from .conftest import needs_fashion

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("jax", reason="the lock-step engine needs JAX (pip install -r requirements-dev.txt)")

# Hand-made validation curves, one per repeat, over an 8-epoch budget with patience 2 and ReduceLROnPlateau
# (patience 1, factor 0.5, floor 2e-4): the first keeps improving, the second peaks at epoch 2, the third at 1.
CURVES = [[0.50, 0.60, 0.70, 0.80, 0.90, 0.91, 0.92, 0.93],
          [0.50, 0.60, 0.55, 0.58, 0.60, 0.60, 0.60, 0.60],
          [0.70, 0.60, 0.60, 0.60, 0.60, 0.60, 0.60, 0.60]]
CALLBACKS = Protocol(epochs=8, patience=2, reduce_lr=True, lr_patience=1, min_lr=2e-4, adam_lr=1e-3)


def jax_env() -> dict[str, str]:
    return {**os.environ, "KERAS_BACKEND": "jax", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def probe() -> dict:
    """The JAX-side checks (tiny softmax heads on synthetic features), run once for the tests below."""
    spec = {"curves": CURVES, **{k: getattr(CALLBACKS, k) for k in
                                ("epochs", "patience", "reduce_lr", "lr_patience", "min_lr", "adam_lr")}}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "lockstep_probe.py"), json.dumps(spec)],
                          cwd=ROOT, env=jax_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def keras_callbacks_on(curve: list[float], protocol: Protocol, tmp_path: Path) -> dict:
    """Drive the plain path's own callbacks (``two_stage.paper_callbacks``: Keras' EarlyStopping,
    ModelCheckpoint and ReduceLROnPlateau plus our epoch log) through one hand-made curve, as ``fit`` would."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    model = build_head(4, 2)
    model.compile(optimizer=keras.optimizers.Adam(protocol.adam_lr), loss="categorical_crossentropy")
    callbacks = two_stage.paper_callbacks(protocol, tmp_path, "probe", backup=False)
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    for epoch, value in enumerate(curve[:protocol.epochs]):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        for callback in callbacks:
            callback.on_epoch_end(epoch, {"val_accuracy": value})
        if model.stop_training:
            break
    return two_stage._read_log(tmp_path / "probe_epochs.jsonl")


@pytest.mark.slow
def test_each_repeat_stops_where_its_validation_curve_says(probe, tmp_path):
    got = probe["curves"]
    # Keras' EarlyStopping(patience=2) on these curves: 8 epochs, best at 2 then 2 flat -> 4, best at 1 -> 3.
    assert got["epochs_run"] == [8, 4, 3]
    for m, curve in enumerate(CURVES):
        keras_run = keras_callbacks_on(curve, CALLBACKS, tmp_path / str(m))
        assert got["epochs_run"][m] == len(keras_run["epoch"]), m
        # ReduceLROnPlateau, per repeat: the learning rate each epoch ended with, as the plain path logs it
        assert got["learning_rate"][m] == pytest.approx(keras_run["learning_rate"], rel=1e-6), m


@pytest.mark.slow
def test_a_stopped_repeat_is_frozen_while_the_others_train(probe):
    got = probe["curves"]
    # The optimizer took exactly the steps of the member's own epochs: the masked steps were not applied.
    assert got["iterations"] == [epochs * got["steps_per_epoch"] for epochs in got["epochs_run"]]
    assert all(got["last_is_own_stop"])  # last weights = those at the member's own stop
    assert all(got["best_is_best_epoch"])  # the checkpoint holds the epoch of the best val_accuracy
    assert all(got["weights_changed_each_epoch"])  # and while it was active, it trained every epoch


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint_and_ends_the_same(probe):
    got = probe["resume"]
    # Killed while reporting epoch 2 (before its checkpoint): the resumed run redoes epoch 2 onwards.
    assert got["resumed_at"] == [1] and got["trained_epochs"][0] == 2
    assert got["same_weights"] and got["same_history"]
    assert max(max(curve) for curve in got["val_accuracy"]) > 0.6  # the heads learn the synthetic classes


@pytest.mark.slow
def test_cancellation_is_honoured(probe):
    assert probe["cancel"]["cancelled"] == "stage2_adam"


def test_lockstep_refuses_what_it_cannot_do_in_one_line(monkeypatch):
    from core.training import lockstep

    with pytest.raises(lockstep.EngineUnavailable, match="needs KERAS_BACKEND=jax"):
        lockstep.check_available(Protocol(engine="lockstep"))
    monkeypatch.setattr(lockstep.keras.config, "backend", lambda: "jax")
    lockstep.check_available(Protocol(engine="lockstep", resplit=True))  # each repeat's own split: supported
    uneven = [SimpleNamespace(x_train=np.zeros((n, 2, 2, 1), np.uint8), y_train=np.zeros(n)) for n in (8, 9)]
    with pytest.raises(lockstep.EngineUnavailable, match=r"train splits differ in size \(\[8, 9\]\)"):
        lockstep.upload_split(uneven, "train")


@pytest.mark.slow
def test_lockstep_on_tensorflow_is_a_one_line_error(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "core", "run", "--engine", "lockstep", "--repeats", "1",
                           "--epochs", "1", "--limit", "100", "--cache", str(tmp_path / "cache")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: the lockstep engine needs KERAS_BACKEND=jax (this process runs Keras on "
                     "tensorflow); run with KERAS_BACKEND=jax, or use --engine plain"]


def key_tree(value):
    """A record's shape: dict keys all the way down (list items reduced to one entry's shape)."""
    if isinstance(value, dict):
        return {k: key_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return ["list", key_tree(value[0]) if value and isinstance(value[0], (dict, list)) else None]
    return None


@needs_fashion
@pytest.mark.slow
def test_three_lockstep_repeats_match_three_plain_ones(tmp_path):
    """``python -m core run --engine lockstep`` under JAX: the plain path's record schema, and stage-one test
    accuracies in the band of 3 plain repeats of the same protocol (TensorFlow, here)."""
    from core.data.datasets import load_dataset

    args = ["--dataset", "fashion-mnist", "--repeats", "3", "--epochs", "3", "--limit", "300",
            "--test-limit", "100"]
    out = tmp_path / "records.json"
    # The lock-step run starts first and its compilation overlaps the plain repeats trained here meanwhile.
    lockstep_run = subprocess.Popen([sys.executable, "-m", "core", "run", *args, "--engine", "lockstep",
                                     "--cache", str(tmp_path / "cache"), "--out", str(out)],
                                    cwd=ROOT, env=jax_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
    try:
        protocol = Protocol(epochs=3, limit=300, test_limit=100)
        data = load_dataset(protocol)
        plain_runs = [two_stage.run_repeat(data, protocol, r, tmp_path / f"plain{r}", save_models=False)
                      for r in range(3)]
        stdout, stderr = lockstep_run.communicate(timeout=900)
    finally:
        lockstep_run.kill()
    assert lockstep_run.returncode == 0, stderr[-3000:]
    assert "repeat 3 stage1 epoch 3/3" in stderr and "Table 1 (ours): 3 repeats" in stdout
    lockstep_runs = json.loads(out.read_text())
    plain_runs = json.loads(json.dumps(plain_runs))  # as stored: JSON
    for run in plain_runs:  # what run_experiment adds when it stores a repeat
        run["repeats_requested"] = 3

    assert [r["repeat"] for r in lockstep_runs] == [0, 1, 2]
    for run in lockstep_runs:
        assert key_tree(run) == key_tree(plain_runs[0])
        assert run["protocol"]["engine"] == "lockstep" and run["env"]["backend"] == "jax"
        assert run["dataset"] == plain_runs[0]["dataset"]  # the same split
        models = tmp_path / "cache" / "artefacts" / run["key"] / f"{run['repeat']:04d}"
        assert sorted(p.name for p in models.iterdir()) == ["head_adam.keras", "head_sgd.keras", "stage1.keras"]
    plain = np.array([r["stage1"]["last"]["test_accuracy"] for r in plain_runs])
    ours = np.array([r["stage1"]["last"]["test_accuracy"] for r in lockstep_runs])
    assert ours.min() > 0.25, (ours, plain)  # chance is 0.1: every repeat learned
    band = (plain.min() - 0.12, plain.max() + 0.12)
    assert all(band[0] <= a <= band[1] for a in ours), (ours, plain)
    assert abs(ours.mean() - plain.mean()) < 0.1, (ours, plain)


@pytest.mark.slow
def test_resplit_lockstep_repeats_each_use_the_split_the_plain_path_draws(photo_folder, tmp_path):
    """``--resplit --engine lockstep``: every repeat trains and is scored on its own split, the one the plain
    path would draw for it (same split seed, same test images in the same order), and the splits differ.

    The engine diagnoses stage one for all repeats at once on the device; its numbers must be the plain
    path's: the stored CNN (last weights) evaluated here by Keras on TensorFlow, before and after
    ``reestimate_batchnorm``, gives the record's ``last`` and ``last_bn`` (one BatchNorm layer, which one
    epoch leaves far from the data's statistics)."""
    from core.data.datasets import load_dataset
    from core.models.compact import load_model_file
    from core.models.models import reestimate_batchnorm
    from core.results.predictions import decode

    out = tmp_path / "records.json"
    proc = subprocess.run([sys.executable, "-m", "core", "run", "--dataset", "face-mask", "--data", str(photo_folder),
                           "--image-size", "32", "--repeats", "2", "--epochs", "1", "--resplit", "--engine",
                           "lockstep", "--cache", str(tmp_path / "cache"), "--out", str(out)],
                          cwd=ROOT, env=jax_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(out.read_text())
    protocol = Protocol(dataset="face-mask", data_path=str(photo_folder), image_size=32, epochs=1, resplit=True,
                        engine="lockstep")
    test_sets = []
    for run in runs:
        data = load_dataset(protocol, repeat=run["repeat"])
        block = decode(run["predictions"])
        assert run["dataset"]["split_seed"] == run["repeat"]
        assert run["dataset"]["sizes"] == {"train": len(data.y_train), "val": len(data.y_val),
                                           "test": len(data.y_test)}
        assert block["y_true"].tolist() == data.y_test.tolist()
        assert block["ids"] == list(data.image_ids("test", block["rows"]))
        assert run["stage1"]["last"]["test_accuracy"] == pytest.approx(
            np.mean(block["labels"]["stage1_last"] == data.y_test))
        test_sets.append(tuple(data.ids["test"]))
        model = load_model_file(tmp_path / "cache" / "artefacts" / run["key"] / f"{run['repeat']:04d}" / "stage1.keras")
        two_stage.compile_model(model, keras.optimizers.Adam(), 1)
        inputs = {split: getattr(data, f"x_{split}") for split in SPLITS}
        labels = {split: keras.utils.to_categorical(getattr(data, f"y_{split}"), 3) for split in SPLITS}
        for kind in ("last", "last_bn"):
            if kind == "last_bn":
                assert reestimate_batchnorm(model, data.x_train) == run["stage1"]["batchnorm"]["layers"] == 1
            ours, stored = record.evaluate(model, inputs, labels), run["stage1"][kind]
            for split in SPLITS:  # one image may flip between backends' convolutions, no more
                assert abs(ours[f"{split}_accuracy"] - stored[f"{split}_accuracy"]) <= 1 / len(labels[split]) + 1e-9
                assert ours[f"{split}_loss"] == pytest.approx(stored[f"{split}_loss"], rel=1e-3), (kind, split)
    assert len(set(test_sets)) == 2
    for run in runs:  # the plain path's second-stage readings, the BatchNorm one included (one BN layer)
        assert set(run["readings"]) == {"logistic", "heldout", "logistic_bn"}
        assert run["readings"]["logistic"]["test_accuracy"] >= 1 / 3 - 0.2
        sizes = run["stage1"]["batchnorm"]["sample_sizes"]
        assert sizes[-1] == {"images": run["dataset"]["sizes"]["train"],
                             "test_accuracy": run["stage1"]["last_bn"]["test_accuracy"]}
    assert any(run["stage1"]["last_bn"]["train_loss"] != pytest.approx(run["stage1"]["last"]["train_loss"], rel=1e-3)
               for run in runs)  # the re-estimation changed something, so the check above compared two things
