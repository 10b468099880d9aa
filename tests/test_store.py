"""The run store: a finished repeat is kept once, read back as it was written, listed per experiment in repeat
order, and exported; the cache lives where the user said, the project's own by default."""

from __future__ import annotations

import json
from pathlib import Path

from core.protocol.config import Protocol
from core.results.store import PROJECT_ROOT, RunStore, default_cache_dir, export_csv, export_json

from .test_sweeps import fake_run

ROOT = Path(__file__).resolve().parent.parent


def record(protocol: Protocol, repeat: int, acc: float = 0.8) -> dict:
    return fake_run(protocol, repeat, {"stage1": acc, "adam": acc + 0.01, "sgd": acc}, [0, 1, 2],
                    {"stage1": [0, 1, 2], "adam": [0, 1, 2], "sgd": [0, 1, 1]})


def test_the_project_root_is_the_repository_and_the_default_cache_is_inside_it(monkeypatch):
    """store.py builds the project root from its own path: moving the module must not move the cache."""
    assert PROJECT_ROOT == ROOT and (PROJECT_ROOT / "app.py").is_file() and (PROJECT_ROOT / "core").is_dir()
    monkeypatch.delenv("TWO_STAGE_CACHE", raising=False)
    assert default_cache_dir() == ROOT / "cache"
    monkeypatch.setenv("TWO_STAGE_CACHE", "/somewhere/else")
    assert default_cache_dir() == Path("/somewhere/else")


def test_a_stored_repeat_reads_back_and_experiments_list_their_repeats_in_order(tmp_path):
    store = RunStore(tmp_path / "cache")
    p, q = Protocol(epochs=3), Protocol(epochs=4)
    for repeat in (2, 0, 1):
        store.put(record(p, repeat))
    store.put(record(q, 0))
    assert store.has(p, 1) and not store.has(p, 3) and not store.has(Protocol(epochs=5), 0)
    assert [r["repeat"] for r in store.runs(p.key())] == [0, 1, 2]
    assert set(store.experiments()) == {p.key(), q.key()} and store.experiments()[q.key()] == q
    store.close()
    again = RunStore(tmp_path / "cache")  # another process, later
    assert again.get(p.key(), 2) == json.loads(json.dumps(record(p, 2)))
    assert again.get(p.key(), 7) is None


def test_models_are_found_only_when_all_three_were_kept(tmp_path):
    store = RunStore(tmp_path / "cache")
    p = Protocol()
    folder = store.workdir(p.key(), 0)
    folder.mkdir(parents=True)
    for name in ("stage1.keras", "head_adam.keras"):
        (folder / name).write_bytes(b"model")
    assert store.model_paths(p.key(), 0) is None
    (folder / "head_sgd.keras").write_bytes(b"model")
    assert set(store.model_paths(p.key(), 0)) == {"stage1", "adam", "sgd"}


def test_exports_hold_every_repeat(tmp_path):
    p = Protocol()
    runs = [record(p, 0, 0.7), record(p, 1, 0.9)]
    assert [r["repeat"] for r in json.loads(export_json(runs))] == [0, 1]
    lines = export_csv(runs).strip().splitlines()
    assert len(lines) == 3 and "repeat" in lines[0]
