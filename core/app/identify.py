"""Give records made before datasets had an identity their data's identity, from the data itself.

Records now carry which data produced them (:meth:`core.data.datasets.Dataset.identity`: the form, a content
fingerprint, the source's sizes, the side the model took, the test rows that duplicate a training image).
Older records, shipped ones among them, lack it. Every record holds its split seed, and a split is a pure
function of the data and that seed, so the identity can be recomputed exactly: the split is drawn again, and
only if it reproduces the record's own test labels and sizes is the identity written. Nothing is retrained
and no number of the record changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data.datasets import load_raw, split_raw
from ..protocol.config import Protocol
from ..results import predictions


class IdentityMismatch(ValueError):
    """The data given does not reproduce a record's split: it is not the data that record was made on."""


def identify(runs: list[dict[str, Any]], data_path: str | None,
             report: Callable[[str], None] = lambda line: None) -> list[dict[str, Any]]:
    """The records with ``dataset`` extended by their data's identity, recomputed from ``data_path`` (the
    recorded path when None). Raises :class:`IdentityMismatch` naming the first repeat whose split the data
    does not reproduce; returns new dicts, the input is left as it was."""
    protocol = Protocol.from_dict(runs[0]["protocol"])
    path = data_path or protocol.data_path
    raw = load_raw(protocol.dataset, path, protocol.image_size)
    out = []
    for run in runs:
        data = split_raw(raw, Protocol.from_dict(run["protocol"]), run["repeat"], copy=True)
        check_same_split(run, data)
        out.append({**run, "dataset": {**run["dataset"], **data.identity()}})
        report(f"{run['repeat'] + 1}: {len(out[-1]['dataset']['test_duplicates_of_train'])} test images duplicate "
               "a training image")
    return out


def check_same_split(run: dict[str, Any], data) -> None:
    recorded = run["dataset"].get("sizes")
    if recorded != data.sizes():
        raise IdentityMismatch(f"repeat {run['repeat'] + 1}: the data gives splits of {data.sizes()}, the record "
                               f"{recorded}; it is not the data this record was made on")
    block = run.get("predictions")
    if block and not np.array_equal(predictions.decode(block)["y_true"], data.y_test):
        raise IdentityMismatch(f"repeat {run['repeat'] + 1}: the test labels differ from the record's; it is not "
                               "the data this record was made on")


def identify_file(records: Path, data_path: str | None, report: Callable[[str], None] = lambda line: None) -> int:
    """:func:`identify` for a ``records.json`` (a bundle's), rewritten atomically; returns the records done."""
    import json

    from ..protocol.files import atomic_write

    runs = json.loads(records.read_text())
    done = identify(runs, data_path, report)
    with atomic_write(records, "w") as fh:
        json.dump(done, fh, indent=1, sort_keys=True)
    return len(done)
