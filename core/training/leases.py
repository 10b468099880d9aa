"""Leases: which process is training a repeat, and whether it is still alive.

Why: two ``python -m core run`` of the same experiment on one cache (or a run and a worker) used to train the
same repeat twice, and one's clean-up deleted the other's checkpoints. Now a process claims a repeat before it
touches the repeat's work folder. A lease names its owner (a random id), process id and host, and carries a
heartbeat that a background thread refreshes every few seconds. A lease is free when nobody holds it, when its
holder's process is gone (same host: known at once), or when its heartbeat is older than ``stale_after``
seconds (another host). Claims run inside one SQLite transaction (``Cache.transact``), so two processes
racing for a repeat cannot both get it. Values are JSON (:class:`~core.data.safe_load.SafeJSONDisk`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

HEARTBEAT_S = float(os.environ.get("TWO_STAGE_HEARTBEAT", "5"))
STALE_AFTER_S = float(os.environ.get("TWO_STAGE_STALE_AFTER", "30"))


def hostname() -> str:
    return socket.gethostname()


def pid_alive(pid: int | None) -> bool:
    """Whether a process of this host is running (a zombie counts as dead)."""
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def holder_alive(entry: dict[str, Any], now: float, stale_after: float) -> bool:
    """Whether the process an entry (lease, job or worker record) names is still alive."""
    if entry.get("host") == hostname() and entry.get("pid") and not pid_alive(entry["pid"]):
        return False
    return now - float(entry.get("heartbeat") or 0.0) <= stale_after


class Leases:
    """The leases of one cache (``<cache>/leases``), held by this process under one owner id."""

    def __init__(self, root: Path, stale_after: float | None = None, heartbeat: float | None = None):
        from ..results.store import open_json_cache

        self.db = open_json_cache(Path(root) / "leases", "leases")
        self.owner = uuid.uuid4().hex[:10]
        self.stale_after = STALE_AFTER_S if stale_after is None else stale_after
        self.heartbeat_s = HEARTBEAT_S if heartbeat is None else heartbeat
        self.held: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def name(key: str, repeat: int) -> str:
        return f"lease/{key}/{repeat:04d}"

    def claim(self, key: str, repeat: int) -> bool:
        """Take the repeat's lease if it is free (or already ours); False while a live process holds it."""
        name, now = self.name(key, repeat), time.time()
        with self.db.transact():
            entry = self.db.get(name)
            if entry and entry["owner"] != self.owner and holder_alive(entry, now, self.stale_after):
                return False
            self.db.set(name, {"owner": self.owner, "pid": os.getpid(), "host": hostname(), "heartbeat": now})
        self.held.add(name)
        self._start_heartbeat()
        return True

    def holder(self, key: str, repeat: int) -> dict[str, Any] | None:
        """The live holder of a repeat's lease, if any."""
        entry = self.db.get(self.name(key, repeat))
        return entry if entry and holder_alive(entry, time.time(), self.stale_after) else None

    def release(self, key: str, repeat: int) -> None:
        name = self.name(key, repeat)
        with self.db.transact():
            entry = self.db.get(name)
            if entry and entry["owner"] == self.owner:
                self.db.delete(name)
        self.held.discard(name)

    def renew(self) -> None:
        now = time.time()
        with self.db.transact():
            for name in list(self.held):
                entry = self.db.get(name)
                if entry and entry["owner"] == self.owner:
                    entry["heartbeat"] = now
                    self.db.set(name, entry)

    def close(self) -> None:
        """Release every lease this process holds and stop the heartbeat."""
        self._stop.set()
        for name in list(self.held):
            key, repeat = name.split("/")[1], int(name.split("/")[2])
            self.release(key, repeat)
        self.db.close()

    def _start_heartbeat(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.renew()
            except Exception:  # noqa: BLE001 - a busy database must not kill the heartbeat; next beat retries
                continue
