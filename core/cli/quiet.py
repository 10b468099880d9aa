"""Keras imported for the command line without TensorFlow's start-up chatter on stderr.

On some CPUs TensorFlow prints "oneDNN custom operations are on ..." and absl's "All log messages before
absl::InitializeLog() ..." from C++ while it is imported, ignoring ``TF_CPP_MIN_LOG_LEVEL``. A command whose
answer is one line (an error, a table) would be buried under them, so the command line imports Keras once,
first, with the process's stderr caught, and passes on every line but those known notices.
"""

from __future__ import annotations

import os
import sys
import tempfile

NOTICES = ("oneDNN custom operations are on", "All log messages before absl::InitializeLog() is called")
"""Start-up lines that say nothing about the command (matched as substrings)."""


def import_keras_quietly() -> None:
    """Import Keras (and so its backend) with file descriptor 2 redirected; replay what was not a notice."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded, closed): nothing to keep clean
        import keras  # noqa: F401
        return
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import keras  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        for line in passed_on(caught.read().decode(errors="replace")):
            print(line, file=sys.stderr)


def passed_on(caught: str) -> list[str]:
    """The lines of what was caught on stderr that say something: not blank, not a known notice."""
    return [line for line in caught.splitlines()
            if line.strip() and not any(notice in line for notice in NOTICES)]
