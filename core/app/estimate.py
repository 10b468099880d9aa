"""How long an experiment will take, from the measured speed of earlier runs of the same CNN.

Why from records: every stored repeat keeps the seconds of each epoch of each stage and the sizes of its
splits, so the speed of this machine (or of the machine that made the shipped results) is already measured.
The estimate scales seconds per training image per epoch by the new protocol's training images, epoch budget
and repeats:

    per repeat = epochs x train images x (stage-one rate + 2 x head rate) + all images x overhead rate + fixed

where the overhead covers the evaluations, the BatchNorm re-estimation and the feature extraction, and the
fixed part is what the gaps between consecutive repeats' finishing times show beyond all timed work. It is an
upper bound: it assumes every stage runs its whole epoch budget, and EarlyStopping often ends sooner.
Records from this machine (its host name *and* its device: a GPU machine lent for a run may carry the same
host name as the CPU machine) are preferred, then records from the same kind of device, then any record of the
architecture; within those, records of the protocol's engine (a lock-step record's times are its share of 20
models trained together, not one model's time). The result says which were used.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass
from datetime import datetime
from statistics import median
from typing import Any

from ..protocol.config import Protocol
from ..protocol.vocabulary import HEADS, METHODS


@dataclass
class Rates:
    """Median seconds per image of one architecture, from ``repeats`` stored records."""

    stage1: float
    """stage-one training, per training image per epoch (validation included)"""
    head: float
    """one stage-two head, per training image per epoch"""
    overhead: float
    """evaluations, BatchNorm re-estimation and feature extraction, per image of all splits"""
    fixed: float
    """seconds per repeat outside every timed part (building and compiling the models, saving them), from the
    gaps between consecutive repeats' finishing times; 0 when no two repeats ran back to back"""
    repeats: int
    basis: str
    """Which records: "this machine", "the same device (CPU (2 cores))", "another device (GPU: ...)"."""


@dataclass
class Estimate:
    seconds: float
    per_repeat: float
    train_images: int
    rates: Rates


def record_rates(run: dict[str, Any]) -> tuple[float, float, float] | None:
    """``(stage1, head, overhead)`` seconds per image of one record, or None when it lacks epoch times."""
    sizes = run.get("dataset", {}).get("sizes") or {}
    train = int(sizes.get("train") or 0)
    every = train + int(sizes.get("val") or 0) + int(sizes.get("test") or 0)
    s1 = run["stage1"].get("history", {}).get("seconds") or []
    heads = [run[h].get("history", {}).get("seconds") or [] for h in HEADS]
    if not train or not s1 or not all(heads):
        return None
    head = sum(sum(h) / len(h) for h in heads) / 2 / train
    extra = (float(run["stage1"].get("eval_seconds") or 0.0)
             + float(run["stage1"].get("batchnorm", {}).get("seconds") or 0.0)
             + float(run.get("features", {}).get("seconds") or 0.0)
             + sum(float(run[h].get("eval_seconds") or 0.0) for h in HEADS))
    return sum(s1) / len(s1) / train, head, extra / max(every, 1)


def measured_seconds(run: dict[str, Any]) -> float:
    """Every timed part of one repeat: all epochs of the three stages, evaluations, BatchNorm, features."""
    epochs = sum(sum(run[m].get("history", {}).get("seconds") or []) for m in METHODS)
    return (epochs + float(run["stage1"].get("eval_seconds") or 0.0)
            + float(run["stage1"].get("batchnorm", {}).get("seconds") or 0.0)
            + float(run.get("features", {}).get("seconds") or 0.0)
            + sum(float(run[h].get("eval_seconds") or 0.0) for h in HEADS))


def fixed_seconds(runs: list[dict[str, Any]]) -> float:
    """Median untimed seconds per repeat: a repeat's finishing time minus the previous repeat's (same
    experiment, next index), less its timed work. Gaps longer than twice the timed work plus two minutes
    are skipped: the run was interrupted or waited between them."""
    by_key: dict[str, dict[int, dict[str, Any]]] = {}
    for run in runs:
        by_key.setdefault(run["key"], {})[int(run["repeat"])] = run
    extra = []
    for repeats in by_key.values():
        for i, run in repeats.items():
            before = repeats.get(i - 1)
            if before is None:
                continue
            try:
                gap = (datetime.fromisoformat(run["finished_at"])
                       - datetime.fromisoformat(before["finished_at"])).total_seconds()
            except (KeyError, ValueError):
                continue
            timed = measured_seconds(run)
            if timed <= gap <= 2 * timed + 120:
                extra.append(gap - timed)
    return median(extra) if extra else 0.0


NEAREST = 5
"""How many records, closest in training-set size, a rate is the median of (a small run's per-image time
carries more fixed per-epoch cost than a large one's)."""


def rates(runs: list[dict[str, Any]], architecture: str, device: str | None = None,
          host: str | None = None, train_images: int | None = None, engine: str = "plain") -> Rates | None:
    """Median rates of ``architecture`` from ``runs`` (any experiments): nearest machine first (``device``,
    when given, must match too), then the :data:`NEAREST` records closest in training-set size to
    ``train_images``; only ``engine``'s records where there are any."""
    host = host or socket.gethostname()
    mine = [r for r in runs if Protocol.from_dict(r["protocol"]).model_id == architecture
            and record_rates(r) is not None]
    same_engine = [r for r in mine if r["protocol"].get("engine", "plain") == engine]
    mine = same_engine or mine
    tiers = [("this machine", [r for r in mine if r["env"].get("host") == host
                               and (device is None or r["env"].get("device") == device)])]
    if device:
        tiers.append((f"the same device ({device})", [r for r in mine if r["env"].get("device") == device]))
    tiers.append(("", mine))
    for basis, chosen in tiers:
        if chosen:
            if not basis:
                devices = sorted({r["env"].get("device", "?") for r in chosen})
                basis = f"another machine ({', '.join(devices)})"
            if train_images:
                chosen = sorted(chosen, key=lambda r: abs(math.log(max(r["dataset"]["sizes"]["train"], 1)
                                                                   / max(train_images, 1))))[:NEAREST]
            measured = [record_rates(r) for r in chosen]
            return Rates(median(m[0] for m in measured), median(m[1] for m in measured),
                         median(m[2] for m in measured), fixed_seconds(chosen), len(chosen), basis)
    return None


def estimate(protocol: Protocol, repeats: int, split_sizes: dict[str, int], runs: list[dict[str, Any]],
             device: str | None = None, host: str | None = None) -> Estimate | None:
    """The upper-bound wall time of ``repeats`` repeats of ``protocol`` whose splits have ``split_sizes``
    images (``train``/``val``/``test``, after any limit), or None without a record of its architecture."""
    train = int(split_sizes.get("train", 0))
    found = rates(runs, protocol.model_id, device, host, train_images=train, engine=protocol.engine)
    if found is None:
        return None
    every = train + int(split_sizes.get("val", 0)) + int(split_sizes.get("test", 0))
    per_repeat = (protocol.epochs * train * (found.stage1 + 2 * found.head) + every * found.overhead
                  + found.fixed)
    return Estimate(per_repeat * repeats, per_repeat, train, found)


def limited_sizes(sizes: dict[str, int], protocol: Protocol) -> dict[str, int]:
    """Split sizes after the protocol's ``limit``/``test_limit`` subsets (the validation share is kept)."""
    pool = sizes.get("train", 0) + sizes.get("val", 0)
    test = sizes.get("test", 0)
    if protocol.limit and protocol.limit < pool:
        pool = protocol.limit
    if protocol.test_limit and protocol.test_limit < test:
        test = protocol.test_limit
    val = round(pool * protocol.validation_split)
    return {"train": pool - val, "val": val, "test": test}
