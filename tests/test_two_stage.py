"""A real two-stage repeat on a small Fashion-MNIST subset: it trains, records, resumes and cancels."""

import keras
import numpy as np
import pytest

from core.data.datasets import load_dataset
from core.protocol.config import Protocol
from core.results import predictions
from core.results.store import RunStore
from core.training import env, experiment
from core.training.record import Cancelled
from core.training.two_stage import run_repeat

from .conftest import needs_fashion

pytestmark = needs_fashion
TINY = Protocol(epochs=3, limit=400, test_limit=200)


@pytest.fixture(scope="module")
def tiny_data():
    return load_dataset(TINY)


def test_a_repeat_trains_both_stages_and_records_everything(tiny_data, tmp_path):
    events = []
    record = run_repeat(tiny_data, TINY, 0, tmp_path / "w", progress=events.append)
    for method in ("stage1", "adam", "sgd"):
        part = record[method]
        assert set(part["last"]) == {f"{s}_{k}" for s in ("train", "val", "test") for k in ("accuracy", "loss")}
        assert part["best"]["val_accuracy"] >= part["last"]["val_accuracy"]
        assert part["epochs_run"] == len(part["history"]["val_accuracy"]) <= 3
        assert 1 <= part["best_epoch"] <= part["epochs_run"]
    assert record["stage1"]["last"]["test_accuracy"] > 0.4  # it learned something in 3 epochs
    assert record["features"]["dim"] == 64
    assert record["env"]["backend"] == keras.config.backend() and record["env"]["versions"]["keras"]
    assert record["seed"] == 0 and record["key"] == TINY.key()
    # what explains stage one's score: BN re-estimation (none in this model, and the record says so) and the
    # training accuracy Keras reported during fit beside the inference-mode one
    s1 = record["stage1"]
    assert s1["batchnorm"]["layers"] == 0 and "no BatchNormalization" in s1["batchnorm"]["note"]
    assert s1["last_bn"] == s1["last"] and s1["best_bn"] == s1["best"]
    assert s1["fit_train_accuracy"]["last"] == s1["history"]["accuracy"][-1]
    # per-image test predictions: every method's label for every test image, probabilities for the misses
    pred = predictions.decode(record["predictions"])
    assert pred["n"] == len(tiny_data.y_test) and np.array_equal(pred["y_true"], tiny_data.y_test)
    accuracy = np.mean(pred["labels"]["adam"] == pred["y_true"])
    assert accuracy == pytest.approx(record["adam"]["last"]["test_accuracy"], abs=1e-6)
    missed = np.flatnonzero(pred["labels"]["stage1_last"] != pred["y_true"])
    assert set(missed) <= set(pred["rows"]) and pred["probs"]["stage1"].shape == (len(pred["rows"]), 10)
    assert all(name.startswith("test #") for name in pred["ids"])
    assert record["env"]["precision"]["name"] == "float32"
    # provenance: the code it ran from and when it started, beside when it finished
    assert record["env"]["code"]["commit"] == env.code_version()["commit"] and record["env"]["code"]["source"]
    assert record["started_at"] <= record["finished_at"]
    # which data: the official Fashion-MNIST files, the side the model took (not the folder datasets' 128)
    identity = record["dataset"]
    assert identity["form"] == "official" and len(identity["fingerprint"]) == 24 and identity["image_size"] == 28
    assert identity["source_sizes"] == {"train": 60000, "test": 10000}
    # the second-stage readings that train no network, on the same features (no BatchNorm: no _bn reading)
    readings = record["readings"]
    assert set(readings) == {"logistic", "heldout"} and "sample_sizes" not in s1["batchnorm"]
    assert readings["logistic"]["test_accuracy"] > 0.4 and readings["logistic"]["l2"] > 0
    # per-class results of every method: recall is each class's accuracy, so their support-weighted mean is
    # the method's test accuracy
    support = np.bincount(tiny_data.y_test, minlength=10)
    for method in ("stage1", "adam", "sgd"):
        recall = np.array(record["per_class"][method]["recall"])
        assert len(recall) == 10 and set(record["per_class"][method]) == {"recall", "precision", "F1"}
        accuracy = record[method][record["protocol"]["stage1_eval" if method == "stage1" else "stage2_eval"]]
        assert np.sum(recall * support) / support.sum() == pytest.approx(accuracy["test_accuracy"], abs=1e-4)
    stages = {e["stage"] for e in events if "epoch" in e}
    assert stages == {"stage1", "stage2_adam", "stage2_sgd"}
    # crash-recovery files are gone; the three models stay for Classify
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["head_adam.keras", "head_sgd.keras",
                                                                  "stage1.keras"]
    # stage two is cheap compared with stage one (it only trains a softmax layer)
    assert record["adam"]["fit_seconds"] < record["stage1"]["fit_seconds"]


def test_same_seed_same_numbers(tiny_data, tmp_path):
    p = TINY.with_(epochs=1)
    a = run_repeat(tiny_data, p, 1, tmp_path / "a", save_models=False)
    b = run_repeat(tiny_data, p, 1, tmp_path / "b", save_models=False)
    assert a["stage1"]["last"] == pytest.approx(b["stage1"]["last"], abs=1e-6)
    assert a["sgd"]["last"] == pytest.approx(b["sgd"]["last"], abs=1e-6)


def test_a_crash_mid_training_resumes_from_the_last_completed_epoch(tiny_data, tmp_path):
    p = TINY.with_(epochs=4, patience=10)

    def crash_after_epoch_2(event):
        if event.get("stage") == "stage1" and event.get("epoch") == 2:
            raise RuntimeError("simulated power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        run_repeat(tiny_data, p, 0, tmp_path, progress=crash_after_epoch_2)
    events = []
    record = run_repeat(tiny_data, p, 0, tmp_path, progress=events.append)
    # The backup is written after the epoch log, so the crash lost epoch 2's backup: it is redone.
    assert {"stage": "stage1", "resumed_at_epoch": 1} in events
    trained = [e["epoch"] for e in events if e.get("stage") == "stage1" and "epoch" in e]
    assert trained == [2, 3, 4]
    assert record["stage1"]["history"]["epoch"] == [1, 2, 3, 4]


def test_cancel_stops_between_batches(tiny_data, tmp_path):
    with pytest.raises(Cancelled):
        run_repeat(tiny_data, TINY, 0, tmp_path, should_stop=lambda: True)


def test_warm_head_and_best_checkpoint_options_are_honoured(tiny_data, tmp_path):
    p = TINY.with_(epochs=2, head_init="warm", features_from="best", stage1_eval="best")
    record = run_repeat(tiny_data, p, 0, tmp_path, save_models=False)
    assert record["protocol"]["head_init"] == "warm" and record["features"]["from"] == "best"
    # A warm head starts from stage one's softmax, so its first epoch is already near stage one.
    first_epoch = record["adam"]["history"]["val_accuracy"][0]
    assert first_epoch > record["stage1"]["best"]["val_accuracy"] - 0.1


def test_experiment_reuses_stored_repeats(tiny_data, tmp_path, monkeypatch):
    store = RunStore(tmp_path / "cache")
    p = TINY.with_(epochs=1)
    first = experiment.run_experiment(p, 2, store, data=tiny_data)
    assert [r["repeat"] for r in first] == [0, 1] and store.model_paths(p.key(), 1)
    assert [r["repeats_requested"] for r in first] == [2, 2]

    def must_not_train(*args, **kwargs):
        raise AssertionError("a stored repeat was trained again")

    monkeypatch.setattr(experiment, "run_repeat", must_not_train)
    monkeypatch.setattr(experiment, "load_raw", must_not_train)
    again = experiment.run_experiment(p, 2, RunStore(tmp_path / "cache"))
    assert again == first
    assert list(store.experiments()) == [p.key()]
    assert np.isclose(store.runs(p.key())[1]["stage1"]["last"]["test_accuracy"],
                      first[1]["stage1"]["last"]["test_accuracy"])


def test_fast_path_computes_exactly_what_the_plain_path_computes(tiny_data, tmp_path, monkeypatch):
    """Several batches per compiled call (stage one) and a whole epoch per call (heads) change speed only."""
    import core.training.two_stage as two_stage

    p = TINY.with_(epochs=2)
    fast = run_repeat(tiny_data, p, 0, tmp_path / "fast", save_models=False)
    monkeypatch.setattr(two_stage, "_steps_per_epoch", lambda data, protocol: 1)
    plain = run_repeat(tiny_data, p, 0, tmp_path / "plain", save_models=False, steps_per_execution=1)
    for method in ("stage1", "adam", "sgd"):
        assert fast[method]["last"] == pytest.approx(plain[method]["last"], abs=1e-5), method
        assert fast[method]["history"]["val_accuracy"] == pytest.approx(plain[method]["history"]["val_accuracy"],
                                                                        abs=1e-5)


def test_our_callbacks_do_not_make_keras_wait_for_every_batch(tmp_path):
    """A callback with its own ``on_train_batch_end`` makes Keras turn every step's logs into Python floats
    before the next step (a host-device sync per step on JAX). Ours poll cancellation at batch *begin*, which
    carries no logs. (Keras' own ModelCheckpoint/BackupAndRestore still define a batch-end hook; the
    lock-step engine is the fast path on JAX.)"""
    from core.training.two_stage import paper_callbacks

    default = keras.callbacks.Callback.on_train_batch_end
    ours = [c for c in paper_callbacks(TINY.with_(reduce_lr=True), tmp_path, "stage1", should_stop=lambda: False)
            if type(c).__module__.startswith("core.")]
    assert len(ours) == 3  # the disk-space guard, the epoch log and the stop check
    for callback in ours:
        assert type(callback).on_train_batch_end is default, type(callback).__name__
