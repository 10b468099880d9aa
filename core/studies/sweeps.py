"""Sweeps: one protocol field varied over a list of values, each point repeated; one command and one job.

Report 002 swept epochs, learning rate and batch size one at a time; report 004 swept the learning rate of each
model and repeated its final configurations five times (mean, standard deviation, min, max and mean epochs).
A :class:`Sweep` is the field's name (a :class:`~core.protocol.config.Protocol` field) and its values; each point is an
ordinary experiment trained through :func:`core.training.experiment.run_experiment`, so its repeats are stored, resumed
and never trained twice, exactly like any other run, and a point shared by two sweeps is trained once.

Every point's numbers come from its records: test accuracy (the protocol's reported weights, as Table 1), the
epochs stage one ran, and report 002's macro precision, recall and F1 from :mod:`core.results.metrics` over the
records' stored test predictions.

This module imports no deep-learning library at import time (the job queue and the app read it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..protocol.config import Protocol
from ..protocol.vocabulary import HEAD_NAMES, HEADS, METHODS

SWEEPABLE: dict[str, type] = {
    "learning_rate": float, "batch_size": int, "epochs": int, "patience": int, "optimizer": str,
    "momentum": float, "weight_decay": float, "augment_preset": str, "architecture": str, "gan_images": int,
    "per_class": int, "limit": int, "image_size": int,
}
"""Protocol fields a sweep may vary, with the type their values are read as."""
DATA_FIELDS = ("dataset", "data_path", "image_size", "limit", "test_limit", "per_class", "seed", "resplit",
               "validation_split", "test_split")
"""Fields that change a protocol's data split: sweeping any other field loads the dataset once for all points."""
MAX_POINTS = 50
SWEEP_COLUMNS = {h: f"+ {name}" for h, name in HEAD_NAMES.items()}
"""A head's column in a sweep's table: "+ Adam head"."""

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Sweep:
    """A protocol field and the values it takes, in order."""

    param: str
    values: tuple

    def __post_init__(self) -> None:
        if self.param not in SWEEPABLE:
            raise ValueError(f"cannot sweep {self.param!r}; choose one of {', '.join(SWEEPABLE)}")
        if not self.values:
            raise ValueError("a sweep needs at least one value")
        if len(self.values) > MAX_POINTS:
            raise ValueError(f"at most {MAX_POINTS} values per sweep (got {len(self.values)})")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"the values of {self.param} repeat: {', '.join(map(str, self.values))}")

    def protocols(self, base: Protocol) -> list[Protocol]:
        """One protocol per value (a bad value raises the protocol's own one-line ValueError)."""
        return [base.with_(**{self.param: value}) for value in self.values]

    def key(self, base: Protocol) -> str:
        """Identity of the sweep job: its points' keys in order."""
        blob = json.dumps([self.param, [p.key() for p in self.protocols(base)]]).encode()
        return "sweep-" + hashlib.sha256(blob).hexdigest()[:16]

    def describe(self, base: Protocol) -> str:
        return f"sweep {self.param} = {', '.join(format_value(v) for v in self.values)}; {base.describe()}"

    def to_dict(self) -> dict[str, Any]:
        return {"param": self.param, "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sweep:
        return cls(data["param"], tuple(data["values"]))


def format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_values(param: str, text: str) -> tuple:
    """``"1e-2,1e-3"`` -> ``(0.01, 0.001)`` for ``param``'s type; one clear ValueError otherwise."""
    if param not in SWEEPABLE:
        raise ValueError(f"cannot sweep {param!r}; choose one of {', '.join(SWEEPABLE)}")
    kind = SWEEPABLE[param]
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    try:
        return tuple(kind(float(item)) if kind is int and float(item).is_integer() else kind(item)
                     for item in items)
    except ValueError:
        raise ValueError(f"--values for {param} must be {kind.__name__}s separated by commas "
                         f"(got {text!r})") from None


def job_plan(protocol: Protocol, sweep: dict[str, Any] | None) -> tuple[str, list[Protocol], str]:
    """``(job key, protocols to train, description)`` of a queue job: one protocol, or a sweep's points."""
    if not sweep:
        return protocol.key(), [protocol], protocol.describe()
    spec = Sweep.from_dict(sweep)
    return spec.key(protocol), spec.protocols(protocol), spec.describe(protocol)


# ------------------------------------------------------------------------------------------------ running

@dataclass
class Point:
    """One value of a sweep: its protocol and its stored repeats."""

    value: Any
    protocol: Protocol
    runs: list[dict[str, Any]] = field(default_factory=list)


def run_sweep(base: Protocol, sweep: Sweep, repeats: int, store: Any, *, progress: Progress | None = None,
              should_stop: Callable[[], bool] | None = None, **run_options: Any) -> list[Point]:
    """Train every point's missing repeats, in order, and return all points with their records.

    ``run_options`` pass through to :func:`core.training.experiment.run_experiment` (e.g. ``executor``). Events carry
    ``sweep_index`` and ``sweep_value``; a ``sweep_point`` event starts each point. When the swept field does
    not change the data (:data:`DATA_FIELDS`), the dataset is loaded and split once for every point.
    """
    from ..data.datasets import load_dataset
    from ..training.experiment import missing_repeats, run_experiment

    report = progress or (lambda event: None)
    protocols = sweep.protocols(base)
    shareable = sweep.param not in DATA_FIELDS and not base.resplit
    shared = None
    points = []
    for index, (value, protocol) in enumerate(zip(sweep.values, protocols)):
        report({"stage": "sweep_point", "sweep_index": index, "points": len(protocols), "param": sweep.param,
                "sweep_value": value})
        tag = {"sweep_index": index, "sweep_value": value}
        options = dict(run_options)
        if shareable and shared is None and missing_repeats(store, protocol, repeats):
            report({"stage": "loading", "dataset": protocol.dataset, **tag})
            shared = load_dataset(protocol)
        if shared is not None:
            options["data"] = shared
        runs = run_experiment(protocol, repeats, store, progress=lambda event, tag=tag: report({**event, **tag}),
                              should_stop=should_stop, **options)
        points.append(Point(value, protocol, runs))
    return points


def execute_job(job: dict[str, Any], store: Any, progress: Progress, should_stop: Callable[[], bool],
                **run_options: Any) -> None:
    """The job queue's ``sweep`` kind: run the sweep, reporting every repeat by its place among all the
    sweep's repeats (point ``i``'s repeat ``r`` is ``i * repeats + r``), so the job's progress counts them all."""
    base = Protocol.from_dict(job["protocol"])
    sweep = Sweep.from_dict(job["sweep"])
    per_point = int(job["sweep"]["repeats"])
    protocols = sweep.protocols(base)
    todo = [i * per_point + r for i, p in enumerate(protocols) for r in range(per_point) if not store.has(p, r)]
    total = per_point * len(protocols)
    progress({"stage": "plan", "todo": todo, "repeats": total, "repeats_done": total - len(todo)})

    def relabel(event: dict[str, Any]) -> None:
        if "repeat" in event and "sweep_index" in event:
            event = {**event, "repeat": event["sweep_index"] * per_point + event["repeat"]}
        progress(event)

    if todo:
        run_sweep(base, sweep, per_point, store, progress=relabel, should_stop=should_stop, **run_options)


# ---------------------------------------------------------------------------------------------- results

def macro_scores(run: dict[str, Any], method: str) -> dict[str, float]:
    """Report 002's macro precision, recall and F1 of one repeat's test predictions (NaN without them)."""
    from ..results import metrics

    matrix = metrics.record_confusion(run, method)
    if matrix is None:
        return {"precision": float("nan"), "recall": float("nan"), "F1": float("nan")}
    macro = metrics.per_class(matrix, [str(i) for i in range(len(matrix))]).loc["macro average"]
    return {"precision": float(macro["precision"]), "recall": float(macro["recall"]), "F1": float(macro["F1"])}


def frame(points: list[Point]) -> pd.DataFrame:
    """One row per (value, method): repeats, test accuracy mean/std/min/max, mean epochs run, macro P/R/F1, and
    (stage one of a model with BatchNorm) the test accuracy with its statistics re-estimated (Table 3's fix)."""
    from ..results import stats

    rows = []
    for point in points:
        for method in METHODS:
            acc = np.array([stats.metric(run, method, "test") for run in point.runs], dtype=float)
            bn = [stats.metric(run, "stage1", "test", f"{run['protocol']['stage1_eval']}_bn")
                  for run in point.runs if method == "stage1" and run["stage1"].get("batchnorm", {}).get("layers")]
            epochs = [run[method]["epochs_run"] for run in point.runs]
            macro = [macro_scores(run, method) for run in point.runs]
            rows.append({
                "value": point.value, "method": method, "repeats": len(acc),
                "test mean": float(acc.mean()) if len(acc) else float("nan"),
                "test std": float(acc.std(ddof=1)) if len(acc) > 1 else float("nan"),
                "test min": float(acc.min()) if len(acc) else float("nan"),
                "test max": float(acc.max()) if len(acc) else float("nan"),
                "mean epochs": float(np.mean(epochs)) if epochs else float("nan"),
                "test mean, BatchNorm re-estimated": float(np.mean(bn)) if bn else float("nan"),
                **{f"macro {k}": float(np.nanmean([m[k] for m in macro])) if macro else float("nan")
                   for k in ("precision", "recall", "F1")},
            })
    return pd.DataFrame(rows)


def table(points: list[Point], param: str) -> pd.DataFrame:
    """The printed summary: one row per value; stage one's statistics, then both heads' mean test accuracy."""
    long = frame(points)
    if long.empty:
        return long
    out = []
    for value, group in long.groupby("value", sort=False):
        by = group.set_index("method")
        s1 = by.loc["stage1"]
        row = {param: format_value(value), "repeats": int(s1["repeats"]), "test acc": _pct(s1["test mean"]),
               "std": _pct(s1["test std"]), "min": _pct(s1["test min"]), "max": _pct(s1["test max"]),
               "mean epochs": f"{s1['mean epochs']:.1f}", "macro P": _pct(s1["macro precision"]),
               "macro R": _pct(s1["macro recall"]), "macro F1": _pct(s1["macro F1"]),
               "BN re-est.": _pct(s1["test mean, BatchNorm re-estimated"])}
        for head in HEADS:
            row[SWEEP_COLUMNS[head]] = _pct(by.loc[head, "test mean"])
        out.append(row)
    return pd.DataFrame(out)


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.2f}%"


def value_of(protocol: Protocol, param: str) -> Any:
    """The value a protocol has for a swept field, as trained (the effective learning rate and model id)."""
    if param == "learning_rate":
        return protocol.stage1_lr
    if param == "architecture":
        return protocol.model_id
    return getattr(protocol, param)


def collect(experiments: list[Any], param: str) -> dict[str, list[Point]]:
    """Group stored experiments (:class:`core.app.catalog.Experiment`) that differ only in ``param`` into series of
    at least two values, keyed by a label. The pages plot these, however the experiments were started."""
    groups: dict[str, list[Point]] = {}
    for exp in experiments:
        fixed = {k: v for k, v in exp.protocol.to_dict().items() if k != param}
        groups.setdefault(json.dumps(fixed, sort_keys=True, default=str), []).append(
            Point(value_of(exp.protocol, param), exp.protocol, exp.runs))
    series = {}
    for points in groups.values():
        distinct: dict[tuple, Point] = {}
        for point in points:
            distinct.setdefault(_sortable(point.value), point)
        if len(distinct) >= 2:
            ordered = [distinct[k] for k in sorted(distinct)]
            series[f"every point: {_without(ordered[0].protocol, param).describe()}; except {param}"] = ordered
    return series


def _without(protocol: Protocol, param: str) -> Protocol:
    """The protocol with ``param`` at its default, to describe what a series' points share."""
    try:
        return protocol.with_(**{param: getattr(Protocol, param, None) if param != "architecture" else None})
    except ValueError:
        return protocol


def _sortable(value: Any) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))
