"""Run records and artefacts under ``cache/``: the only module that reads or writes results.

Records are JSON-ready dicts kept in a diskcache ``Cache`` with eviction disabled (diskcache's default policy
would silently drop results once the cache passes 1 GB). A record is keyed by ``(protocol key, repeat)``, so a
repeat that exists is never trained again. Trained models live as ``.keras`` files in a per-repeat folder.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import diskcache

from .config import Protocol

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_ENV = "TWO_STAGE_CACHE"


def default_cache_dir() -> Path:
    """``$TWO_STAGE_CACHE`` if set, else ``cache/`` in the project."""
    return Path(os.environ.get(CACHE_ENV) or PROJECT_ROOT / "cache")


def private_dir(path: Path) -> Path:
    """Create ``path`` readable by its owner only (the cache holds models and, in jobs, user paths)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        path.chmod(0o700)
    except PermissionError:
        pass
    return path


class RunStore:
    """Read and write run records and per-repeat artefact folders."""

    def __init__(self, root: str | Path | None = None):
        self.root = private_dir(Path(root) if root else default_cache_dir())
        self.records = diskcache.Cache(str(self.root / "records"), eviction_policy="none",
                                       size_limit=2**40)
        self.artefacts = private_dir(self.root / "artefacts")

    # ------------------------------------------------------------------------------------------ records
    @staticmethod
    def record_key(key: str, repeat: int) -> str:
        return f"run/{key}/{repeat:04d}"

    def has(self, protocol: Protocol, repeat: int) -> bool:
        return self.record_key(protocol.key(), repeat) in self.records

    def get(self, key: str, repeat: int) -> dict[str, Any] | None:
        return self.records.get(self.record_key(key, repeat))

    def put(self, record: dict[str, Any]) -> None:
        """Store a finished repeat atomically (one SQLite transaction) with its protocol."""
        with self.records.transact():
            self.records.set(f"protocol/{record['key']}", record["protocol"])
            self.records.set(self.record_key(record["key"], record["repeat"]), record)

    def delete(self, key: str, repeat: int) -> None:
        self.records.delete(self.record_key(key, repeat))
        shutil.rmtree(self.workdir(key, repeat), ignore_errors=True)

    def experiments(self) -> dict[str, Protocol]:
        """Every protocol with at least one stored repeat, by key."""
        out = {}
        for k in self.records.iterkeys():
            if isinstance(k, str) and k.startswith("protocol/"):
                key = k.split("/", 1)[1]
                if any(True for _ in self._run_keys(key)):
                    out[key] = Protocol.from_dict(self.records[k])
        return out

    def runs(self, key: str) -> list[dict[str, Any]]:
        """All stored repeats of one experiment, in repeat order."""
        return [self.records[k] for k in sorted(self._run_keys(key))]

    def all_runs(self) -> list[dict[str, Any]]:
        return [run for key in self.experiments() for run in self.runs(key)]

    def _run_keys(self, key: str) -> Iterator[str]:
        prefix = f"run/{key}/"
        return (k for k in self.records.iterkeys() if isinstance(k, str) and k.startswith(prefix))

    # ---------------------------------------------------------------------------------------- artefacts
    def workdir(self, key: str, repeat: int) -> Path:
        """The repeat's folder: crash-recovery files while training, ``.keras`` models after."""
        return self.artefacts / key / f"{repeat:04d}"

    def discard_unfinished(self, key: str, repeat: int) -> bool:
        """Remove a repeat's crash-recovery folder if the repeat has no stored record (a cancelled run).

        A stored repeat is never touched, so a late cancel cannot take away finished work.
        """
        if self.record_key(key, repeat) in self.records:
            return False
        shutil.rmtree(self.workdir(key, repeat), ignore_errors=True)
        return True

    def artefact_bytes(self) -> int:
        """Bytes under ``artefacts/`` (models of finished repeats plus crash-recovery files of running ones)."""
        return sum(f.stat().st_size for f in self.artefacts.rglob("*") if f.is_file())

    def prune_artefacts(self, budget_bytes: int | None) -> list[Path]:
        """Keep ``artefacts/`` within ``budget_bytes`` by deleting the models of the oldest finished repeats.

        Policy: only folders of repeats whose record is stored are candidates, oldest (by modification time)
        first; the record itself (numbers, histories, environment) is never deleted, only the ``.keras`` files
        that Classify would load. Folders of unfinished repeats hold crash-recovery state and are never pruned.
        ``None`` means no budget. Returns the folders removed.
        """
        if budget_bytes is None:
            return []
        finished = []
        total = 0
        for folder in self.artefacts.glob("*/*"):
            if not folder.is_dir():
                continue
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            total += size
            try:
                repeat = int(folder.name)
            except ValueError:
                continue
            if self.record_key(folder.parent.name, repeat) in self.records:
                finished.append((folder.stat().st_mtime, folder, size))
        removed = []
        for _mtime, folder, size in sorted(finished, key=lambda item: item[0]):
            if total <= budget_bytes:
                break
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            removed.append(folder)
        return removed

    def model_paths(self, key: str, repeat: int) -> dict[str, Path] | None:
        """Stage-one model and both heads of a finished repeat, if they were kept."""
        folder = self.workdir(key, repeat)
        paths = {"stage1": folder / "stage1.keras", "adam": folder / "head_adam.keras",
                 "sgd": folder / "head_sgd.keras"}
        return paths if all(p.exists() for p in paths.values()) else None

    def close(self) -> None:
        self.records.close()


def export_json(runs: list[dict[str, Any]]) -> str:
    return json.dumps(runs, indent=1, sort_keys=True)


def export_csv(runs: list[dict[str, Any]]) -> str:
    """One row per repeat with the headline numbers and provenance (histories are in the JSON)."""
    from .stats import runs_frame

    buf = io.StringIO()
    runs_frame(runs).to_csv(buf, index=False)
    return buf.getvalue()
