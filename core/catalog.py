"""Everything the app can show: shipped reference experiments and the user's own, side by side.

The reference layer is read-only and always listed first; the user's cache is read through
:class:`core.store.RunStore`. Pages ask this module, never the files, what exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import reference
from .config import Protocol
from .store import RunStore

REFERENCE = "reference (shipped with the app)"
CACHE = "your runs"


@dataclass
class Experiment:
    key: str
    protocol: Protocol
    runs: list[dict[str, Any]]
    source: str

    @property
    def label(self) -> str:
        when = max(r["finished_at"] for r in self.runs)[:10]
        device = self.runs[0]["env"]["device"]
        return (f"{self.protocol.dataset} · {len(self.runs)} repeat(s) · {self.source} · "
                f"{self.protocol.describe()} · {device} · {when}")


@dataclass
class ModelChoice:
    label: str
    source: str
    dataset: str
    key: str
    repeat: int
    class_names: list[str]
    input_shape: list[int]
    paths: dict[str, Path] = field(default_factory=dict)


def experiments(store: RunStore | None = None) -> list[Experiment]:
    """Reference experiments first, then the user's, each with its runs in repeat order."""
    out = []
    for bundle in reference.bundles():
        runs = reference.load_runs(bundle)
        if runs:
            out.append(Experiment(runs[0]["key"], Protocol.from_dict(runs[0]["protocol"]), runs, REFERENCE))
    if store is not None:
        for key, protocol in store.experiments().items():
            out.append(Experiment(key, protocol, store.runs(key), CACHE))
    return out


def models(store: RunStore | None = None) -> list[ModelChoice]:
    """Trained model sets (stage one + both heads) that Classify can use."""
    out = []
    for bundle in reference.bundles():
        info = reference.model_info(bundle)
        if info:
            out.append(ModelChoice(f"{info['dataset']} · reference repeat {info['repeat']}", REFERENCE,
                                   info["dataset"], info["key"], info["repeat"], info["class_names"],
                                   info["input_shape"], info["paths"]))
    if store is not None:
        for key, protocol in store.experiments().items():
            for run in store.runs(key):
                paths = store.model_paths(key, run["repeat"])
                if paths:
                    test = run["stage1"]["last"]["test_accuracy"]
                    out.append(ModelChoice(
                        f"{protocol.dataset} · your run {key[:6]} repeat {run['repeat']} (test {test:.3f})",
                        CACHE, protocol.dataset, key, run["repeat"], run["dataset"]["class_names"],
                        run["dataset"]["input_shape"], paths))
    return out
