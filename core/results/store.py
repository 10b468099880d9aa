"""Run records and artefacts under ``cache/``: the only module that reads or writes results.

Records are JSON-ready dicts kept in a diskcache ``Cache`` under ``<cache>/runs`` with eviction disabled
(diskcache's default policy would silently drop results once the cache passes 1 GB) and
:class:`~core.data.safe_load.SafeJSONDisk`, so nothing read back can run code. A record is keyed by
``(protocol key, repeat)``, so a repeat that exists is never trained again. Trained models live as ``.keras``
files in a per-repeat folder under ``<cache>/artefacts``.

Caches the store cannot write are still read: a read-only folder (a shared results disk, a copied cache) is
opened through SQLite's read-only mode and says so (:attr:`RunStore.read_only`); the permissions of an existing
folder are never changed. An older cache whose records were pickled (``<cache>/records``) is converted once with
a loader that accepts plain data only. A damaged database (truncated, overwritten) raises :class:`StoreError`
whose message says how to move it aside, whenever the damage is found: on opening or on a later read. The job
queue and the leases open their databases through the same :func:`open_json_cache`, so they behave alike.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import pickle
import shutil
import sqlite3
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterator

import diskcache
from diskcache.core import MODE_BINARY, MODE_PICKLE, MODE_RAW

from ..protocol.config import Protocol
from ..data.safe_load import SafeJSONDisk, UnsafeCacheError, UnsafeDataError, plain_unpickle

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CACHE_ENV = "TWO_STAGE_CACHE"
RECORDS_DIR = "runs"
LEGACY_DIR = "records"
"""Where versions before the JSON store kept (pickled) records; converted once, then renamed."""


class StoreError(RuntimeError):
    """The cache cannot be used as it is; the message says what is wrong and what to do."""


class DiskFull(StoreError):
    """Too little free space left to write the next checkpoint safely (see :func:`ensure_free_space`)."""


CHECKPOINT_MARGIN_BYTES = 50 * 2**20
"""Room kept free beyond the checkpoints themselves: epoch logs, the SQLite record, the final ``.keras`` files."""


def default_cache_dir() -> Path:
    """``$TWO_STAGE_CACHE`` if set, else ``cache/`` in the project."""
    return Path(os.environ.get(CACHE_ENV) or PROJECT_ROOT / "cache")


def private_dir(path: Path) -> Path:
    """Create ``path`` readable by its owner only (the cache holds models and, in jobs, user paths).

    An existing folder is left exactly as it is: its permissions are its owner's choice (a folder made
    read-only on purpose must stay read-only).
    """
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def writable(path: Path) -> bool:
    """Whether files can be created in ``path`` (a real probe: permissions, read-only mounts, ACLs)."""
    try:
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def is_read_only(*folders: Path) -> bool:
    """Whether any of these existing folders refuses new files (a folder not there yet is not read-only)."""
    return any(folder.is_dir() and not writable(folder) for folder in folders)


def read_only_message(root: Path, what: str = "finished results are shown") -> str:
    return (f"The cache {root} is read-only: {what}, but nothing new can be stored there. Use a writable "
            "cache (--cache DIR or $TWO_STAGE_CACHE).")


def damaged_message(what: str, folder: Path, exc: BaseException) -> str:
    return (f"The {what} in {folder} cannot be read: its database is damaged ({type(exc).__name__}: {exc}). "
            f"Move it aside and start afresh: mv {folder} {folder}.damaged")


def database_error(what: str, folder: Path, exc: sqlite3.DatabaseError) -> StoreError:
    """One user-facing error for an SQLite failure: damaged, read-only, full disk or busy."""
    text = str(exc).lower()
    if not isinstance(exc, sqlite3.OperationalError):  # corrupt pages, "file is not a database"
        return StoreError(damaged_message(what, folder, exc))
    if "readonly" in text or "read-only" in text:
        return StoreError(read_only_message(folder.parent, f"the {what} can be read"))
    if "full" in text:
        return DiskFull(f"not enough free disk space for the {what} in {folder} ({exc}); finished repeats are kept")
    if "locked" in text or "busy" in text:
        return StoreError(f"The {what} in {folder} is busy (another process holds it too long); try again.")
    return StoreError(f"The {what} in {folder} cannot be used ({exc}).")


def ensure_free_space(folder: Path, checkpoint_bytes: int) -> None:
    """Raise :class:`DiskFull` unless ``folder``'s disk has room for the next checkpoints of a model.

    Why check first: h5py, which Keras writes weight files with, crashes the whole process (a segmentation
    fault, no exception to catch) when a write meets a full disk. Needed: three times ``checkpoint_bytes``
    (the weights and optimizer state: the best checkpoint plus ``BackupAndRestore``'s two snapshots) and
    :data:`CHECKPOINT_MARGIN_BYTES`. Finished repeats are already stored and stay.
    """
    needed = 3 * checkpoint_bytes + CHECKPOINT_MARGIN_BYTES
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskFull(f"not enough free disk space in {folder}: {free / 1e6:.0f} MB free, about "
                       f"{needed / 1e6:.0f} MB needed; finished repeats are kept")


def _guarded(method):
    """Turn a refused (pickled) row or a database damaged after opening into one :class:`StoreError`."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except UnsafeCacheError as exc:
            folder = self.root / RECORDS_DIR
            raise StoreError(f"The run records in {folder} contain data this project never writes ({exc}); it "
                             f"was not loaded. Move the folder aside: mv {folder} {folder}.untrusted") from exc
        except sqlite3.DatabaseError as exc:
            raise database_error("run records", self.root / RECORDS_DIR, exc) from exc
    return wrapper


class RunStore:
    """Read and write run records and per-repeat artefact folders."""

    def __init__(self, root: str | Path | None = None):
        root = Path(root) if root else default_cache_dir()
        folder = root / RECORDS_DIR
        self.read_only = is_read_only(root, folder)
        self.root = root if self.read_only else create_cache_dir(root)
        try:
            self.records: Any = open_json_cache(folder, "run records", read_only=self.read_only)
            if not self.read_only:
                _convert_legacy(self.root / LEGACY_DIR, self.records)
        except UnsafeCacheError as exc:
            raise StoreError(f"The run records in {folder} contain data this project never writes ({exc}); "
                             f"they were not loaded. Move the folder aside: mv {folder} {folder}.untrusted") from exc
        self.artefacts = self.root / "artefacts" if self.read_only else private_dir(self.root / "artefacts")

    # ------------------------------------------------------------------------------------------ records
    @staticmethod
    def record_key(key: str, repeat: int) -> str:
        return f"run/{key}/{repeat:04d}"

    @_guarded
    def has(self, protocol: Protocol, repeat: int) -> bool:
        return self.record_key(protocol.key(), repeat) in self.records

    @_guarded
    def get(self, key: str, repeat: int) -> dict[str, Any] | None:
        return self.records.get(self.record_key(key, repeat))

    @_guarded
    def put(self, record: dict[str, Any]) -> None:
        """Store a finished repeat atomically (one SQLite transaction) with its protocol."""
        if self.read_only:
            raise StoreError(read_only_message(self.root))
        with self.records.transact():
            self.records.set(f"protocol/{record['key']}", record["protocol"])
            self.records.set(self.record_key(record["key"], record["repeat"]), record)

    @_guarded
    def experiments(self) -> dict[str, Protocol]:
        """Every protocol with at least one stored repeat, by key."""
        keys = [k for k in self.records.iterkeys() if isinstance(k, str)]
        with_runs = {k.split("/")[1] for k in keys if k.startswith("run/")}
        out = {}
        for k in keys:
            if k.startswith("protocol/") and k.split("/", 1)[1] in with_runs:
                out[k.split("/", 1)[1]] = Protocol.from_dict(self.records.get(k))
        return out

    @_guarded
    def runs(self, key: str) -> list[dict[str, Any]]:
        """All stored repeats of one experiment, in repeat order."""
        return [self.records.get(k) for k in sorted(self._run_keys(key))]

    def _run_keys(self, key: str) -> Iterator[str]:
        prefix = f"run/{key}/"
        return (k for k in self.records.iterkeys() if isinstance(k, str) and k.startswith(prefix))

    # ---------------------------------------------------------------------------------------- artefacts
    def workdir(self, key: str, repeat: int) -> Path:
        """The repeat's folder: crash-recovery files while training, ``.keras`` models after."""
        return self.artefacts / key / f"{repeat:04d}"

    def discard_unfinished(self, key: str, repeat: int) -> bool:
        """Remove a repeat's crash-recovery folder, and the lock-step checkpoint of a cohort that includes it,
        if the repeat has no stored record (a cancelled run).

        A stored repeat is never touched, so a late cancel cannot take away finished work.
        """
        if self.read_only or self.record_key(key, repeat) in self.records:
            return False
        shutil.rmtree(self.workdir(key, repeat), ignore_errors=True)
        for cohort in (self.artefacts / key).glob("lockstep-*-*"):  # core.training.lockstep's shared checkpoint
            first, last = cohort.name.split("-")[1:3]
            if first.isdigit() and last.isdigit() and int(first) <= repeat <= int(last):
                shutil.rmtree(cohort, ignore_errors=True)
        return True

    def prune_artefacts(self, budget_bytes: int | None) -> list[Path]:
        """Keep ``artefacts/`` within ``budget_bytes`` by deleting the models of the oldest finished repeats.

        Policy: only folders of repeats whose record is stored are candidates, oldest (by modification time)
        first; the record itself (numbers, histories, environment) is never deleted, only the ``.keras`` files
        that Classify would load. Folders of unfinished repeats hold crash-recovery state and are never pruned.
        ``None`` means no budget. Returns the folders removed.
        """
        if budget_bytes is None or self.read_only:
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


# ------------------------------------------------------------------------------------------ databases

def create_cache_dir(path: Path) -> Path:
    """:func:`private_dir`, with a folder that cannot be created reported as one :class:`StoreError`."""
    try:
        return private_dir(path)
    except OSError as exc:
        raise StoreError(f"The cache folder {path} cannot be created ({exc.strerror or exc}). Use another one "
                         "(--cache DIR or $TWO_STAGE_CACHE).") from exc


def open_json_cache(folder: Path, what: str, *, read_only: bool = False) -> JsonCache | ReadOnlyCache:
    """The JSON-only database in ``folder`` (never pickles, eviction off) that ``what`` names in messages.

    ``read_only`` opens it through SQLite's read-only mode (nothing is created; writes raise StoreError).
    A damaged database raises :class:`StoreError` here or on the read that meets the damage.
    """
    if read_only:
        return ReadOnlyCache(folder, what)
    create_cache_dir(folder)
    try:
        cache = JsonCache(folder, what)
        cache.get("__probe__")  # reads the table, so a truncated or overwritten file fails here, not later
    except sqlite3.DatabaseError as exc:
        raise database_error(what, folder, exc) from exc
    return cache


class JsonCache(diskcache.Cache):
    """diskcache's ``Cache`` with :class:`SafeJSONDisk`, whose SQLite errors become one :class:`StoreError`.

    Why here: damage can sit in pages that opening the database does not read, so the error can surface on
    any later call; every caller (records, job queue, leases) then gets the same message.
    """

    def __init__(self, folder: Path, what: str):
        self.what, self.folder = what, folder
        super().__init__(str(folder), eviction_policy="none", size_limit=2**40, disk=SafeJSONDisk, timeout=60)

    def __getstate__(self):  # diskcache re-opens an unpickled cache by calling __init__ with this state
        return (self.folder, self.what)

    @contextlib.contextmanager
    def _errors(self):
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise database_error(self.what, self.folder, exc) from exc

    def get(self, *args, **kwargs):
        with self._errors(), _undecodable(self.what, self.folder):
            return super().get(*args, **kwargs)

    def set(self, *args, **kwargs):
        with self._errors():
            return super().set(*args, **kwargs)

    def delete(self, *args, **kwargs):
        with self._errors():
            return super().delete(*args, **kwargs)

    def __contains__(self, key):
        with self._errors():
            return super().__contains__(key)

    def iterkeys(self, reverse=False):
        with self._errors(), _undecodable(self.what, self.folder):
            yield from super().iterkeys(reverse)

    @contextlib.contextmanager
    def transact(self, retry=False):
        with self._errors(), super().transact(retry):
            yield


@contextlib.contextmanager
def _undecodable(what: str, folder: Path):
    """A row whose stored bytes no longer decode (zlib, UTF-8, JSON) is damage too, found only on reading it.

    Only around reads: a ValueError raised inside a caller's transaction (``QueueFull``) is not damage.
    """
    try:
        yield
    except (zlib.error, ValueError) as exc:
        raise StoreError(damaged_message(what, folder, exc)) from exc


class ReadOnlyCache:
    """The read operations of ``diskcache.Cache`` over a database this process may not write.

    Rows are decoded exactly as :class:`SafeJSONDisk` decodes them (JSON, never pickle); a folder without a
    database reads as empty; any write raises :class:`StoreError` saying the cache is read-only.
    """

    def __init__(self, folder: Path, what: str):
        self.folder, self.what = folder, what
        self.disk = SafeJSONDisk(str(folder))
        db = folder / "cache.db"
        self.con = None
        if db.is_file():
            try:
                self.con = _connect_read_only(db)
                self.con.execute("SELECT COUNT(*) FROM Cache").fetchone()
            except sqlite3.DatabaseError as exc:
                raise database_error(what, folder, exc) from exc

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        if self.con is None:
            return []
        try:
            return self.con.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise database_error(self.what, self.folder, exc) from exc

    def _refuse(self, *args, **kwargs):
        raise StoreError(read_only_message(self.folder.parent, f"the {self.what} can be read"))

    set = delete = transact = _refuse

    def iterkeys(self) -> Iterator[Any]:
        for db_key, raw in self._rows("SELECT key, raw FROM Cache ORDER BY rowid"):
            with _undecodable(self.what, self.folder):
                key = self.disk.get(db_key, raw)
            yield key

    def get(self, key: Any, default: Any = None) -> Any:
        db_key, raw = self.disk.put(key)
        rows = self._rows("SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = ?", (db_key, raw))
        if not rows:
            return default
        mode, filename, value = rows[0]
        with _undecodable(self.what, self.folder):
            return self.disk.fetch(mode, filename, value, False)

    def __contains__(self, key: Any) -> bool:
        db_key, raw = self.disk.put(key)
        return bool(self._rows("SELECT 1 FROM Cache WHERE key = ? AND raw = ?", (db_key, raw)))

    def close(self) -> None:
        if self.con is not None:
            self.con.close()


def _connect_read_only(db: Path) -> sqlite3.Connection:
    """SQLite read-only; a WAL database in a folder we cannot write needs ``immutable`` to open at all."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)
        con.execute("SELECT COUNT(*) FROM Cache").fetchone()
        return con
    except sqlite3.OperationalError:
        return sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True, check_same_thread=False)


def _convert_legacy(folder: Path, records: diskcache.Cache) -> int:
    """Copy a pre-JSON (pickled) record store into ``records`` with :func:`plain_unpickle`, then rename it.

    Old records are plain dicts of numbers and strings, which the restricted loader reads without looking up
    any class; a row that needs anything else was not written by this project and stops the conversion.
    """
    db = folder / "cache.db"
    if not db.is_file():
        return 0
    try:
        con = _connect_read_only(db)
        rows = con.execute("SELECT key, raw, mode, filename, value FROM Cache").fetchall()
        con.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(damaged_message("old-format run records", folder, exc)) from exc
    try:
        decoded = [(_legacy_value(folder, key, MODE_RAW if raw else MODE_PICKLE, None),
                    _legacy_value(folder, value, mode, filename))
                   for key, raw, mode, filename, value in rows]
    except (UnsafeDataError, pickle.UnpicklingError, OSError, ValueError, EOFError) as exc:
        raise StoreError(f"The old-format run records in {folder} could not be converted safely ({exc}); "
                         f"nothing was loaded from them. Move them aside: mv {folder} {folder}.untrusted") from exc
    with records.transact():
        for key, value in decoded:
            records.set(key, json.loads(json.dumps(value)))
    folder.rename(folder.with_name(folder.name + ".pickle-legacy"))
    return len(decoded)


def _legacy_value(folder: Path, value: Any, mode: int, filename: str | None) -> Any:
    if mode == MODE_RAW:
        return bytes(value) if isinstance(value, (bytes, memoryview)) else value
    if mode == MODE_PICKLE:
        data = value if value is not None else (folder / filename).read_bytes()
        return plain_unpickle(bytes(data))
    if mode == MODE_BINARY:
        return (folder / filename).read_bytes()
    return (folder / filename).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------- exports

def export_json(runs: list[dict[str, Any]]) -> str:
    return json.dumps(runs, indent=1, sort_keys=True)


def export_csv(runs: list[dict[str, Any]]) -> str:
    """One row per repeat with the headline numbers and provenance (histories are in the JSON)."""
    from .stats import runs_frame

    buf = io.StringIO()
    runs_frame(runs).to_csv(buf, index=False)
    return buf.getvalue()
