"""Loaders that accept only the types they expect: nothing read from disk, a cache or an upload runs code.

Why a module of its own: pickle executes whatever a file asks it to, so every place that has to read a pickle
(CIFAR-10's official batches, a cache written by an older version of this project) or a diskcache database
(which falls back to pickle for keys and values it did not write itself) goes through one of these instead.

- :class:`SafeJSONDisk`: diskcache's ``JSONDisk`` minus its pickle fallbacks. A row that claims to be a pickled
  key or value (something this project never writes) raises :class:`UnsafeCacheError` instead of being loaded.
- :func:`plain_unpickle`: pickles of plain data only (dict, list, tuple, str, bytes, numbers, bools, None):
  no global may be looked up, so no callable can be reached.
- :func:`cifar_unpickle`: plain data plus NumPy arrays, which is exactly what the CIFAR-10 batches hold.
"""

from __future__ import annotations

import io
import pickle
from typing import IO, Any

import diskcache
from diskcache.core import MODE_PICKLE


class UnsafeCacheError(RuntimeError):
    """A cache row was not written by this project's JSON store (a pickle, or an old-format record)."""


class UnsafeDataError(ValueError):
    """A pickle asked for a type outside the loader's allow-list."""


class SafeJSONDisk(diskcache.JSONDisk):
    """JSON keys and values only; refuses diskcache's pickle modes instead of unpickling them."""

    def get(self, key, raw):
        if not raw:
            raise UnsafeCacheError("a cache key is stored as a pickle, which this project never writes")
        return super().get(key, raw)

    def fetch(self, mode, filename, value, read):
        if mode == MODE_PICKLE:
            raise UnsafeCacheError("a cache value is stored as a pickle, which this project never writes")
        return super().fetch(mode, filename, value, read)


class _PlainUnpickler(pickle.Unpickler):
    allowed: frozenset[tuple[str, str]] = frozenset()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.allowed:
            return super().find_class(module, name)
        raise UnsafeDataError(f"refused to load {module}.{name} from a pickle")


class _CifarUnpickler(_PlainUnpickler):
    # How NumPy pickles an ndarray (numpy 1.x and 2.x module names).
    allowed = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    })


def plain_unpickle(data: bytes | IO[bytes]) -> Any:
    """Unpickle plain Python data; any class or function reference raises :class:`UnsafeDataError`."""
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    return _PlainUnpickler(stream).load()


def cifar_unpickle(stream: IO[bytes]) -> Any:
    """Unpickle one CIFAR-10 batch (a dict of bytes keys, lists and a uint8 array), nothing else."""
    return _CifarUnpickler(stream, encoding="bytes").load()
