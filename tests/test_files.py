"""atomic_write: a reader sees the old file or the new one, never half of one, and nothing is left behind."""

from __future__ import annotations

import os

import numpy as np
import pytest

from core.protocol.files import atomic_write, write_bytes, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "stats.npz"
    write_bytes(path, b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["stats.npz"]


def test_numpy_writes_through_it_and_reads_back(tmp_path):
    path = tmp_path / "features.npy"
    with atomic_write(path, durable=True) as f:
        np.save(f, np.arange(5), allow_pickle=False)
    assert np.load(path, allow_pickle=False).tolist() == [0, 1, 2, 3, 4]
    write_text(tmp_path / "info.json", "{\"é\": 1}")
    assert (tmp_path / "info.json").read_text(encoding="utf-8") == "{\"é\": 1}"


def test_the_file_gets_the_permissions_a_plain_open_would_give(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    write_bytes(tmp_path / "atomic", b"x")
    assert os.stat(tmp_path / "atomic").st_mode == os.stat(plain).st_mode


def test_only_whole_file_modes():
    with pytest.raises(ValueError, match="mode"):
        with atomic_write("x", "ab"):
            pass
