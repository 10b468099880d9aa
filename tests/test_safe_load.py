"""Nothing read from a cache or a dataset archive can run code: planted pickles are refused, not loaded."""

from __future__ import annotations

import io
import os
import pickle
import sqlite3
import tarfile

import diskcache
import numpy as np
import pytest

from core.data.datasets import DatasetUnavailable, load_raw
from core.data.safe_load import UnsafeDataError, cifar_unpickle, plain_unpickle
from core.results.store import RunStore, StoreError


class _Payload:
    """Unpickling this runs ``os.system`` (touches a file): what an attacker would plant."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _record(key="k1", repeat=0):
    return {"key": key, "repeat": repeat, "protocol": {"dataset": "fashion-mnist"}, "value": 0.9}


def test_restricted_loaders_refuse_any_callable(tmp_path):
    marker = tmp_path / "ran"
    evil = pickle.dumps({"data": _Payload(marker)})
    with pytest.raises(UnsafeDataError):
        plain_unpickle(evil)
    with pytest.raises(UnsafeDataError):
        cifar_unpickle(io.BytesIO(evil))
    assert not marker.exists()
    assert plain_unpickle(pickle.dumps({"a": [1, 2.5, "x", None, True]})) == {"a": [1, 2.5, "x", None, True]}
    arrays = cifar_unpickle(io.BytesIO(pickle.dumps({b"data": np.arange(6, dtype=np.uint8)})))
    assert arrays[b"data"].tolist() == [0, 1, 2, 3, 4, 5]


def test_records_are_json_and_a_planted_pickle_row_is_refused(tmp_path):
    store = RunStore(tmp_path)
    store.put(_record())
    store.close()
    marker = tmp_path / "ran"
    db = tmp_path / "runs" / "cache.db"
    con = sqlite3.connect(db)
    modes = {row[0] for row in con.execute("SELECT mode FROM Cache")}
    assert modes <= {1, 3}  # raw / binary JSON: nothing pickled
    # Plant a pickled value (mode 4) under a key the store reads, as someone with write access could.
    con.execute("UPDATE Cache SET mode = 4, value = ? WHERE rowid = (SELECT MAX(rowid) FROM Cache)",
                (sqlite3.Binary(pickle.dumps(_Payload(marker))),))
    con.commit()
    con.close()
    store = RunStore(tmp_path)
    with pytest.raises(StoreError, match="pickle.*mv .*untrusted"):
        store.runs("k1")
    assert not marker.exists()


def test_an_old_pickled_store_is_converted_with_the_plain_loader_and_kept_aside(tmp_path):
    old = diskcache.Cache(str(tmp_path / "records"))  # the format of earlier versions: pickled dicts
    old.set("protocol/k1", {"dataset": "fashion-mnist"})
    old.set("run/k1/0000", _record())
    old.close()
    store = RunStore(tmp_path)
    assert store.get("k1", 0) == _record()
    assert not (tmp_path / "records").exists() and (tmp_path / "records.pickle-legacy").is_dir()


def test_an_old_store_holding_anything_but_plain_data_is_refused_unloaded(tmp_path):
    marker = tmp_path / "ran"
    old = diskcache.Cache(str(tmp_path / "records"))
    old.set("run/k1/0000", {"evil": _Payload(marker)})
    old.close()
    with pytest.raises(StoreError, match="could not be converted safely"):
        RunStore(tmp_path)
    assert not marker.exists() and (tmp_path / "records").is_dir()


def test_a_crafted_cifar_archive_is_refused_without_running_its_pickle(tmp_path):
    marker = tmp_path / "ran"
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                     "test_batch"):
            blob = pickle.dumps({b"data": _Payload(marker), b"labels": [0]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(DatasetUnavailable, match="not a genuine CIFAR-10 batch"):
        load_raw("cifar10", str(archive))
    assert not marker.exists()
