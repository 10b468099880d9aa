"""Writing a file so that a reader never sees half of it: write a temporary file beside it, then rename.

Why one helper: a run killed mid-write (Ctrl-C, a worker's SIGTERM, a full disk) must leave the previous file
or none, never a truncated one that a later load misreads; and the temporary file must be unique per writer,
sit in the same folder (a rename is atomic only within one file system) and be removed when writing fails.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


def _process_umask() -> int:
    """The process's umask (read once, at import, while no other thread can be creating files)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_process_umask()
"""What ``open(path, "w")`` would have given the file; :func:`tempfile.mkstemp` makes it private (0600)."""


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, durable: bool = False) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing (``"wb"`` or ``"w"``); on a clean exit it replaces
    ``path`` in one rename, on an error it is removed and ``path`` is left as it was.

    ``durable`` also flushes the file to the disk before the rename (a checkpoint that must survive a power
    cut, not only a killed process).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes files whole: mode 'wb' or 'w', not {mode!r}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """:func:`atomic_write` of bytes."""
    with atomic_write(path) as handle:
        handle.write(data)


def write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write` of text (UTF-8)."""
    with atomic_write(path, "w") as handle:
        handle.write(text)
