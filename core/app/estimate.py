"""How long an experiment will take, from measured parts: earlier runs' speed, and earlier jobs' start-up and
loading.

Why from records: every stored repeat keeps the seconds of each epoch of each stage, the sizes of its splits and
(records made since provenance was added) when it started and finished, so the speed of this machine (or of
the machine that made the shipped results) is already measured. A job is more than its epochs, though:

    job = start-up + loading + repeats x (epochs x train images x (stage-one rate + 2 x head rate) + between)

- *between* is each repeat's work outside its epochs (building the models, evaluating stage one, re-estimating
  BatchNorm, extracting features, the second-stage readings, saving): a record's wall time (``finished_at`` -
  ``started_at``) less its epochs, per image of all splits; for records without ``started_at``, the timed
  evaluations per image plus the gaps between consecutive repeats' finishing times beyond all timed work, plus
  the second-stage readings when those records predate them (their measured speed in any record that has
  them, per training image x feature x class);
- *start-up* (a worker's fresh Python importing TensorFlow) and *loading* (reading and decoding the dataset)
  come from earlier jobs in this cache's queue, which measure them (:mod:`core.jobs.live`), loading only from
  jobs that read the same data; the page may give its own measured time of reading the data instead.

It is an upper bound on the epochs (every stage runs its whole epoch budget; EarlyStopping often ends sooner).
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
    between: float | None = None
    """a repeat's wall time less its epochs, per image of all splits, from records that know when they
    started; None when none does (then ``overhead`` and ``fixed`` stand in for it)"""
    chosen: list[dict[str, Any]] | None = None
    """the records these rates are the medians of"""
    stage1_fixed: float = 0.0
    head_fixed: float = 0.0
    between_fixed: float = 0.0
    """seconds per stage-one epoch, head epoch and repeat that do not grow with the images (validation set-up,
    callbacks; building the models, saving them), where the records span more than one size: a tiny job is not
    a share of a large one's time (:func:`_line`); ``stage1``/``head``/``between`` are then the slopes"""


@dataclass
class Estimate:
    seconds: float
    """The whole job: start-up and loading where measured, and every repeat."""
    per_repeat: float
    train_images: int
    rates: Rates
    between: float = 0.0
    """Of ``per_repeat``: the work outside the epochs."""
    startup: float | None = None
    """Seconds from queueing to the first event of earlier jobs here; None when none was measured."""
    loading: float | None = None
    """Seconds reading this dataset, measured by an earlier job (or the page); None when unknown."""
    stage1_epoch: float = 0.0
    head_epoch: float = 0.0

    def parts(self) -> dict[str, float]:
        """What a queued job keeps for its time left until it has measured its own (:mod:`core.jobs.live`)."""
        out = {"stage1_epoch": self.stage1_epoch, "head_epoch": self.head_epoch, "between": self.between}
        out.update({k: v for k, v in (("startup", self.startup), ("loading", self.loading)) if v is not None})
        return out


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


def between_rate(run: dict[str, Any]) -> float | None:
    """A record's wall time less its epochs, per image of all its splits; None without ``started_at``."""
    try:
        wall = (datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None
    sizes = run.get("dataset", {}).get("sizes") or {}
    every = sum(int(sizes.get(k) or 0) for k in ("train", "val", "test"))
    epochs = sum(sum(run[m].get("history", {}).get("seconds") or []) for m in METHODS)
    return max(0.0, wall - epochs) / every if every and wall > 0 else None


def readings_rate(run: dict[str, Any]) -> float | None:
    """Seconds of a record's second-stage readings (:mod:`core.training.ceiling`: logistic regressions on the
    features) per training image x feature x class; None for a record without them."""
    readings = run.get("readings") or {}
    seconds = sum(float(v.get("seconds") or 0.0) for v in readings.values() if isinstance(v, dict))
    train = int((run.get("dataset", {}).get("sizes") or {}).get("train") or 0)
    dim, classes = int(run.get("features", {}).get("dim") or 0), len(run.get("dataset", {}).get("class_names") or [])
    return seconds / (train * dim * classes) if seconds and train and dim and classes else None


def readings_seconds(runs: list[dict[str, Any]], chosen: list[dict[str, Any]], train: int,
                     device: str | None) -> float:
    """What the second-stage readings add to a repeat whose records (``chosen``) predate them: the median rate
    of any records that have them (this device's first), times this protocol's training images, feature
    width and classes (from ``chosen``). 0 when no record has readings or ``chosen`` has them already."""
    if any(readings_rate(r) is not None for r in chosen):
        return 0.0
    here = [readings_rate(r) for r in runs if r.get("env", {}).get("device") == device]
    rates = [x for x in here if x is not None] or [x for x in map(readings_rate, runs) if x is not None]
    dims = [int(r.get("features", {}).get("dim") or 0) for r in chosen]
    classes = len(chosen[0].get("dataset", {}).get("class_names") or []) if chosen else 0
    return median(rates) * train * median(dims) * classes if rates and dims and classes else 0.0


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
            sizes = [_images(r) for r in chosen]
            s1_fixed, s1 = _line([(t, m[0] * t) for (t, _), m in zip(sizes, measured)])
            head_fixed, head = _line([(t, m[1] * t) for (t, _), m in zip(sizes, measured)])
            walls = [(every, b * every) for (_, every), b in zip(sizes, map(between_rate, chosen)) if b is not None]
            between_fixed, between = _line(walls) if walls else (0.0, None)
            return Rates(s1, head, median(m[2] for m in measured), fixed_seconds(chosen), len(chosen), basis,
                         between, chosen, s1_fixed, head_fixed, between_fixed)
    return None


def _images(run: dict[str, Any]) -> tuple[int, int]:
    """``(training images, images of all splits)`` of a record."""
    sizes = run.get("dataset", {}).get("sizes") or {}
    train = int(sizes.get("train") or 0)
    return train, train + int(sizes.get("val") or 0) + int(sizes.get("test") or 0)


def _line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """``(fixed seconds, seconds per image)`` through ``(images, seconds)`` points: a least-squares line when the
    records differ in size (both parts kept non-negative), else through zero (a rate per image)."""
    import numpy as np

    points = [(n, s) for n, s in points if n > 0]
    if len({n for n, _ in points}) >= 2:
        slope, fixed = np.polyfit([n for n, _ in points], [s for _, s in points], 1)
        if slope > 0 and fixed >= 0:
            return float(fixed), float(slope)
        if slope > 0:  # a line that would start below zero: through zero instead
            return 0.0, median(s / n for n, s in points)
        return float(median(s for _, s in points)), 0.0  # no growth with size: the time is fixed
    return 0.0, median(s / n for n, s in points)


def estimate(protocol: Protocol, repeats: int, split_sizes: dict[str, int], runs: list[dict[str, Any]],
             device: str | None = None, host: str | None = None, jobs: list[dict[str, Any]] | None = None,
             loading: float | None = None) -> Estimate | None:
    """The upper-bound wall time of ``repeats`` repeats of ``protocol`` whose splits have ``split_sizes``
    images (``train``/``val``/``test``, after any limit), or None without a record of its architecture.

    ``jobs`` (this cache's queue) give the start-up and loading measured by earlier jobs; ``loading``, the
    seconds the caller itself measured reading this dataset, stands in when no earlier job read it.
    """
    train = int(split_sizes.get("train", 0))
    found = rates(runs, protocol.model_id, device, host, train_images=train, engine=protocol.engine)
    if found is None:
        return None
    every = train + int(split_sizes.get("val", 0)) + int(split_sizes.get("test", 0))
    between = (found.between_fixed + every * found.between if found.between is not None
               else every * found.overhead + found.fixed
               + readings_seconds(runs, found.chosen or [], train, device))
    stage1_epoch = found.stage1_fixed + train * found.stage1
    head_epoch = found.head_fixed + train * found.head
    per_repeat = protocol.epochs * (stage1_epoch + 2 * head_epoch) + between
    startup, loaded = measured_parts(jobs or [], protocol)
    loaded = loaded if loaded is not None else loading
    total = per_repeat * repeats + (startup or 0.0) + (loaded or 0.0)
    return Estimate(total, per_repeat, train, found, between, startup, loaded, stage1_epoch, head_epoch)


RECENT_JOBS = 5
"""How many of the latest jobs a start-up or loading time is the median of."""


def measured_parts(jobs: list[dict[str, Any]], protocol: Protocol) -> tuple[float | None, float | None]:
    """``(start-up, loading)`` seconds: medians over the latest jobs that measured them (:mod:`core.jobs.live`),
    loading only over jobs that read the same data (dataset, folder and, for folders, image size)."""
    def same_data(job: dict[str, Any]) -> bool:
        theirs = job.get("protocol") or {}
        return (theirs.get("dataset") == protocol.dataset and theirs.get("data_path") == protocol.data_path
                and (theirs.get("image_size") == protocol.image_size or protocol.dataset in ("fashion-mnist",
                                                                                            "cifar10")))

    latest = sorted(jobs, key=lambda j: j.get("created", 0), reverse=True)
    starts = [j["progress"]["measured"]["startup"] for j in latest
              if "startup" in ((j.get("progress") or {}).get("measured") or {})][:RECENT_JOBS]
    loads = [j["progress"]["measured"]["loading"] for j in latest if same_data(j)
             and "loading" in ((j.get("progress") or {}).get("measured") or {})][:RECENT_JOBS]
    return (median(starts) if starts else None), (median(loads) if loads else None)


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
