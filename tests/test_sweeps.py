"""Sweeps: one field over values, each point repeated; their table; one job in the queue; feature caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.results import predictions
from core.studies import sweeps
from core.protocol.config import Protocol
from core.jobs.queue import JobQueue
from core.results.store import RunStore
from core.studies.sweeps import Sweep, parse_values

from .conftest import synthetic_images, write_class_folders


def fake_run(protocol: Protocol, repeat: int, acc: dict[str, float], y_true, labels: dict[str, list[int]],
             epochs: int = 3) -> dict:
    """A record with the fields sweeps and stats read: accuracies, epochs and per-image predictions."""
    y_true = np.asarray(y_true)
    classes = int(max(y_true.max(), *(max(v) for v in labels.values()))) + 1
    probs = {}
    for name in predictions.LABEL_SETS:
        chosen = labels["stage1" if name.startswith("stage1") else name]
        probs[name] = np.eye(classes, dtype=np.float32)[chosen]
    scores = lambda a: {f"{s}_{k}": (a if k == "accuracy" else 1.0)  # noqa: E731
                        for s in ("train", "val", "test") for k in ("accuracy", "loss")}
    part = lambda a: {"last": scores(a), "best": scores(a), "last_bn": scores(a), "best_bn": scores(a),  # noqa
                      "epochs_run": epochs, "best_epoch": epochs, "fit_seconds": 1.0, "history": {}}
    return {"key": protocol.key(), "repeat": repeat, "protocol": protocol.to_dict(), "seed": repeat,
            "describe": protocol.describe(), "dataset": {"name": protocol.dataset, "class_names": ["a", "b", "c"]},
            "stage1": part(acc["stage1"]), "adam": part(acc["adam"]), "sgd": part(acc["sgd"]),
            "predictions": predictions.encode(y_true, probs, "last", lambda rows: [str(r) for r in rows]),
            "features": {"seconds": 0.1}, "finished_at": "2025-01-01T00:00:00",
            "env": {"device": "cpu", "backend": "tensorflow", "versions": {}}}


def test_values_are_read_as_the_fields_type_and_bad_ones_say_so():
    assert parse_values("learning_rate", "1e-2, 1e-3,1e-4") == (0.01, 0.001, 0.0001)
    assert parse_values("batch_size", "8,16") == (8, 16)
    assert parse_values("augment_preset", "none,aug1") == ("none", "aug1")
    with pytest.raises(ValueError, match="ints separated by commas"):
        parse_values("epochs", "ten")
    with pytest.raises(ValueError, match="cannot sweep"):
        Sweep("dataset", ("cifar10",))
    with pytest.raises(ValueError, match="repeat"):
        Sweep("epochs", (1, 1))
    with pytest.raises(ValueError, match="learning_rate"):
        Sweep("learning_rate", (0.1, -1.0)).protocols(Protocol())


def test_macro_scores_match_a_hand_computed_confusion_matrix():
    """y = [0,0,0,1,1,2], predicted [0,0,1,1,2,2]: precision (1, 1/2, 1/2), recall (2/3, 1/2, 1)."""
    p = Protocol(dataset="cifar10")
    run = fake_run(p, 0, {"stage1": 4 / 6, "adam": 1.0, "sgd": 1.0}, [0, 0, 0, 1, 1, 2],
                   {"stage1": [0, 0, 1, 1, 2, 2], "adam": [0, 0, 0, 1, 1, 2], "sgd": [0, 0, 0, 1, 1, 2]})
    scores = sweeps.macro_scores(run, "stage1")
    precision, recall = np.array([1, 0.5, 0.5]), np.array([2 / 3, 0.5, 1.0])
    f1 = 2 * precision * recall / (precision + recall)
    assert np.isclose(scores["precision"], precision.mean())
    assert np.isclose(scores["recall"], recall.mean())
    assert np.isclose(scores["F1"], f1.mean())
    assert sweeps.macro_scores(run, "adam") == {"precision": 1.0, "recall": 1.0, "F1": 1.0}


def test_sweep_table_gives_mean_std_min_max_and_mean_epochs_per_value():
    base = Protocol(dataset="cifar10")
    y = [0, 1, 2]
    points = []
    for lr, accs in ((1e-2, (0.5, 0.7)), (1e-3, (0.8, 0.9))):
        p = base.with_(learning_rate=lr)
        runs = [fake_run(p, i, {"stage1": a, "adam": a + 0.01, "sgd": a}, y,
                         {"stage1": y, "adam": y, "sgd": y}, epochs=2 + i) for i, a in enumerate(accs)]
        points.append(sweeps.Point(lr, p, runs))
    long = sweeps.frame(points)
    first = long[(long["value"] == 1e-2) & (long["method"] == "stage1")].iloc[0]
    assert np.isclose(first["test mean"], 0.6) and np.isclose(first["test std"], np.std([0.5, 0.7], ddof=1))
    assert (first["test min"], first["test max"], first["mean epochs"]) == (0.5, 0.7, 2.5)
    table = sweeps.table(points, "learning_rate")
    assert table["learning_rate"].tolist() == ["0.01", "0.001"]
    assert table["test acc"].tolist() == ["60.00%", "85.00%"] and table["+ Adam head"].tolist() == ["61.00%", "86.00%"]


def test_a_sweep_is_one_job_counting_every_points_repeats(tmp_path):
    queue = JobQueue(tmp_path / "cache")
    base = Protocol(dataset="cifar10", architecture="004-model3", epochs=2)
    sweep = Sweep("learning_rate", (1e-2, 1e-3, 1e-4))
    job_id = queue.submit(base, 2, sweep=sweep.to_dict())
    job = queue.job(job_id)
    assert (job["kind"], job["repeats"], job["sweep"]["repeats"]) == ("sweep", 6, 2)
    assert job["describe"].startswith("sweep learning_rate = 0.01, 0.001, 0.0001")
    assert queue.submit(base, 2, sweep=sweep.to_dict()) == job_id  # the same sweep is not queued twice
    assert queue.submit(base, 2) != job_id  # the base protocol alone is another job
    store = RunStore(tmp_path / "done")
    for p in sweep.protocols(base):
        for r in range(2):
            store.put(fake_run(p, r, {"stage1": .5, "adam": .5, "sgd": .5}, [0, 1], {k: [0, 1] for k in
                                                                                    ("stage1", "adam", "sgd")}))
    finished = JobQueue(tmp_path / "done")
    assert finished.job(finished.submit(base, 2, sweep=sweep.to_dict()))["state"] == "done"


def test_sweep_submit_on_the_command_line_queues_one_job_and_says_so_like_submit(tmp_path, capsys):
    from core.cli.main import main

    args = ["sweep", "--dataset", "cifar10", "--architecture", "004-model3", "--epochs", "2", "--repeats", "2",
            "--param", "learning_rate", "--values", "1e-2,1e-3", "--cache", str(tmp_path), "--no-worker"]
    assert main([*args, "--submit"]) == 0
    out, err = capsys.readouterr()
    job = JobQueue(tmp_path).job(out.strip())
    assert (job["state"], job["kind"], job["repeats"]) == ("queued", "sweep", 4)
    assert err.strip() == f"queued: {job['describe']}, 4 repeats"  # the same line as `core submit` prints
    assert main([*args, "--submit"]) == 0 and capsys.readouterr().out.strip() == job["id"]  # not queued twice


def test_collect_groups_experiments_that_differ_only_in_the_swept_field():
    from core.app.catalog import Experiment

    y = [0, 1]
    make = lambda p: Experiment(p.key(), p, [fake_run(p, 0, {"stage1": .5, "adam": .6, "sgd": .5}, y,  # noqa
                                                      {k: y for k in ("stage1", "adam", "sgd")})], "your runs")
    base = Protocol(dataset="cifar10", architecture="004-model2")
    exps = [make(base.with_(learning_rate=lr)) for lr in (1e-2, 1e-4)] + [make(base)]  # None = Adam's 1e-3
    exps.append(make(base.with_(learning_rate=1e-2, epochs=3)))  # differs in two fields: its own series
    series = sweeps.collect(exps, "learning_rate")
    assert len(series) == 1
    assert [p.value for p in next(iter(series.values()))] == [1e-4, 1e-3, 1e-2]


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    images, labels = synthetic_images(8, 2, size=16)
    return write_class_folders(tmp_path / "tiny", images, labels, ["cats", "dogs"])


@pytest.mark.slow
def test_a_sweep_job_runs_in_a_worker_and_its_points_are_reused(tiny_folder, tmp_path, monkeypatch):
    from core.training import two_stage
    from core.jobs.worker import Worker

    cache = tmp_path / "cache"
    base = Protocol(dataset="folder", data_path=str(tiny_folder), architecture="004-model3", image_size=16,
                    epochs=1, augment=False)
    sweep = Sweep("batch_size", (4, 8))
    worker = Worker(cache, heartbeat=0.2, poll=0.1)
    job_id = worker.queue.submit(base, 1, sweep=sweep.to_dict())
    assert worker.run_job(worker.queue.claim(worker.id)) == "done"
    job = worker.queue.job(job_id)
    assert job["progress"]["repeats_done"] == 2
    monkeypatch.setattr(two_stage, "run_repeat", lambda *a, **k: pytest.fail("a stored point was retrained"))
    points = sweeps.run_sweep(base, sweep, 1, RunStore(cache))
    assert [p.protocol.batch_size for p in points] == [4, 8] and all(len(p.runs) == 1 for p in points)
    table = sweeps.table(points, "batch_size")
    assert table["repeats"].tolist() == [1, 1]


@pytest.mark.slow
def test_second_sweep_point_trains_no_backbone(tiny_folder, tmp_path, monkeypatch):
    """Report 002: the frozen backbone's features are computed for the first point only."""
    from core.models import backbones

    monkeypatch.setattr(backbones, "INPUT_SIZE", 32)
    built = []
    real_build = backbones.build_backbone
    monkeypatch.setattr(backbones, "build_backbone", lambda *a: built.append(a) or real_build(*a))
    base = Protocol(dataset="folder", data_path=str(tiny_folder), architecture="002-resnet18", image_size=16,
                    epochs=2)
    events: list[dict] = []
    points = sweeps.run_sweep(base, Sweep("learning_rate", (1e-2, 1e-3)), 1, RunStore(tmp_path / "cache"),
                              progress=events.append)
    cached = [(e["sweep_index"], e["cached"]) for e in events if e.get("stage") == "backbone"]
    assert cached == [(0, False)] * 3 + [(1, True)] * 3
    assert len(built) == 1
    record = points[1].runs[0]
    assert record["training_data"]["backbone"]["cached"] == {"train": True, "val": True, "test": True}
    assert record["stage1"]["epochs_run"] == 2 and "adam" in record and record["predictions"]["n"] > 0
    assert not (tmp_path / "cache" / "artefacts" / record["key"] / "0000" / "stage1.keras").exists()
