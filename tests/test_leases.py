"""Leases: one process per repeat; a dead or silent holder's repeat can be taken over."""

from __future__ import annotations

import subprocess
import sys
import time

from core.training.leases import Leases, hostname, pid_alive


def test_a_held_lease_is_refused_to_others_until_released(tmp_path):
    a, b = Leases(tmp_path), Leases(tmp_path)
    try:
        assert a.claim("key", 0) and a.claim("key", 0)  # claiming again is fine for the holder
        assert not b.claim("key", 0)
        assert b.claim("key", 1)  # other repeats are free
        assert a.holder("key", 0)["owner"] == a.owner
        a.release("key", 0)
        assert b.claim("key", 0)
    finally:
        a.close()
        b.close()


def test_a_dead_holder_on_this_host_frees_its_lease_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not pid_alive(dead.pid)
    b = Leases(tmp_path)
    try:
        b.db.set(Leases.name("key", 0), {"owner": "gone", "pid": dead.pid, "host": hostname(),
                                         "heartbeat": time.time()})
        assert b.claim("key", 0)
    finally:
        b.close()


def test_a_silent_holder_on_another_host_loses_its_lease_after_stale_after(tmp_path):
    b = Leases(tmp_path, stale_after=30)
    try:
        entry = {"owner": "remote", "pid": 1, "host": "elsewhere", "heartbeat": time.time()}
        b.db.set(Leases.name("key", 0), entry)
        assert not b.claim("key", 0)
        b.db.set(Leases.name("key", 0), {**entry, "heartbeat": time.time() - 31})
        assert b.claim("key", 0)
    finally:
        b.close()


def test_the_heartbeat_keeps_a_lease_fresh_and_close_releases_it(tmp_path):
    a = Leases(tmp_path, heartbeat=0.05)
    a.claim("key", 0)
    first = a.db.get(Leases.name("key", 0))["heartbeat"]
    time.sleep(0.3)
    assert a.db.get(Leases.name("key", 0))["heartbeat"] > first
    a.close()
    b = Leases(tmp_path)
    try:
        assert b.holder("key", 0) is None
    finally:
        b.close()
