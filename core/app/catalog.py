"""Everything the app can show: shipped reference experiments and the user's own, side by side.

The reference layer is read-only and always listed first; the user's cache is read through
:class:`core.results.store.RunStore`. Pages ask this module, never the files, what exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..protocol.arch_spec import ARCH_INFO
from ..protocol.config import Protocol
from ..protocol.vocabulary import METHODS, dataset_title
from ..protocol.words import count_text
from ..results.store import RunStore
from . import reference

REFERENCE = "reference (shipped with the app)"
CACHE = "your runs"
SHORT_SOURCE = {REFERENCE: "shipped", CACHE: "your run"}
"""A source in a selectbox label, short: Face Mask v2's label was cut at 1280 px."""
REFERENCE_SUFFIX = "-reference"
"""Added to an experiment's id when the shipped reference and the user's cache both hold its key."""
_LABEL_FIELDS = {"epochs": "{} epochs", "limit": "{:,} training images", "test_limit": "{:,} test images",
                 "patience": "patience {}", "reduce_lr": "ReduceLROnPlateau", "augment": "augmentation {}",
                 "head_init": "{} head", "stage1_eval": "stage one {}", "features_from": "features from {}",
                 "stage2_eval": "stage two {}", "resplit": "new split per repeat", "precision": "{}",
                 "engine": "{} engine", "batch_size": "batch {}", "sgd_momentum": "momentum {}", "seed": "seed {}"}
"""Protocol fields a short label names when they differ from the paper's, and how."""


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
        return (f"{self.protocol.dataset} · {count_text(len(self.runs), 'repeat')} · {self.source} · "
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
    title: str = ""
    """The experiment in a reader's words: "Dogs & Cats", "Face Mask Detection v2"."""
    test_accuracy: dict[str, float] = field(default_factory=dict)
    """``stage1``/``adam``/``sgd`` -> test accuracy of exactly these models."""
    ood_path: Path | None = None
    """The model's out-of-distribution statistics (:mod:`core.classify.ood`); shipped bundles only."""

    @property
    def shipped(self) -> bool:
        return self.source == REFERENCE


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


def report_experiments(report_id: str) -> list[Experiment]:
    """A related report's shipped small-plan experiments (:func:`core.app.reference.report_runs`), each with
    its runs in repeat order, labelled as shipped."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for run in reference.report_runs(report_id):
        by_key.setdefault(run["key"], []).append(run)
    return [Experiment(key, Protocol.from_dict(runs[0]["protocol"]), sorted(runs, key=lambda r: r["repeat"]),
                       REFERENCE) for key, runs in by_key.items()]


def dataset_form(run: dict[str, Any]) -> str:
    """"CIFAR-10, JPEG copy of 50,000 + 10,000 images", "Dogs & Cats, image folder of 8,000 + 2,000 images":
    which data, and which copy of it, a record's numbers are on, in words (the copy's training + test sizes
    as found, before any split or ``--limit``)."""
    from ..data.datasets import FORMS

    dataset = run.get("dataset", {})
    form = dataset.get("form")
    title = dataset_title(dataset.get("name", ""))
    text = f"{title}, {FORMS.get(form, form)}" if form else title
    copy = dataset.get("source_sizes") or {}
    if copy.get("train"):  # which copy: the paper's 8,000 + 2,000 photos or a 1,400 + 1,600 subset of them
        text += (f" of {copy['train']:,} + {copy['test']:,} images" if copy.get("test") else
                 f" of {copy['train']:,} images")
    return text


def models(store: RunStore | None = None) -> list[ModelChoice]:
    """Trained model sets (stage one + both heads) that Classify can use: the shipped ones, then the user's
    (except frozen-backbone runs, whose stage one reads features rather than photos).

    Each label carries the test accuracy of exactly the models it loads: for a shipped bundle as measured
    when it was bundled (``model.json``), for a user's repeat from its record (the weights the repeat saved:
    ``features_from`` for stage one, ``stage2_eval`` for the heads).
    """
    out = []
    for bundle in reference.bundles():
        info = reference.model_info(bundle)
        if info:
            title = info.get("title") or _bundle_title(bundle, info["dataset"])
            accuracy = _accuracy(info.get("test_accuracy")) or _record_accuracy(bundle, info["repeat"])
            out.append(ModelChoice(f"{title} · shipped · {_accuracy_text(accuracy)}", REFERENCE, info["dataset"],
                                   info["key"], info["repeat"], info["class_names"], info["input_shape"],
                                   info["paths"], title, accuracy, info["ood_path"]))
    if store is not None:
        for key, protocol in store.experiments().items():
            if _takes_features(protocol):
                continue
            for run in store.runs(key):
                paths = store.model_paths(key, run["repeat"])
                if paths:
                    title = reference.experiment_title(protocol)
                    accuracy = run_accuracy(run)
                    out.append(ModelChoice(
                        f"{title} · your run {key[:6]}, repeat {run['repeat'] + 1} · {_accuracy_text(accuracy)}",
                        CACHE, protocol.dataset, key, run["repeat"], run["dataset"]["class_names"],
                        run["dataset"]["input_shape"], paths, title, accuracy))
    return out


def _takes_features(protocol: Protocol) -> bool:
    """Frozen-backbone runs save a stage one that reads cached backbone features, not photos: Classify cannot
    use them."""
    entry = ARCH_INFO.get(protocol.model_id)
    return bool(entry and entry.frozen)


def run_accuracy(run: dict[str, Any]) -> dict[str, float]:
    """Test accuracy of the models a repeat saved (stage one with ``features_from`` weights, the heads with
    ``stage2_eval`` weights), from its record."""
    protocol = run.get("protocol", {})
    s1, s2 = protocol.get("features_from", "last"), protocol.get("stage2_eval", "last")
    return {"stage1": run["stage1"][s1]["test_accuracy"], "adam": run["adam"][s2]["test_accuracy"],
            "sgd": run["sgd"][s2]["test_accuracy"]}


def _bundle_title(bundle: Path, dataset: str) -> str:
    """The title of a bundle made before ``model.json`` recorded it."""
    runs = reference.load_runs(bundle)
    return reference.experiment_title(Protocol.from_dict(runs[0]["protocol"])) if runs else dataset


def _record_accuracy(bundle: Path, repeat: int) -> dict[str, float]:
    run = next((r for r in reference.load_runs(bundle) if r["repeat"] == repeat), None)
    return run_accuracy(run) if run else {}


def _accuracy(measured: dict[str, Any] | None) -> dict[str, float]:
    return {m: float(measured[m]) for m in METHODS} if measured else {}


def _accuracy_text(accuracy: dict[str, float]) -> str:
    if not accuracy:
        return "test accuracy unknown"
    return f"test accuracy {100 * accuracy['stage1']:.1f} % (CNN), {100 * accuracy['adam']:.1f} % (two-stage, Adam)"


# ------------------------------------------------------------------------------------ choosing and labelling

def model_chooser(choices: list[ModelChoice], root: Path | None = None) -> tuple[Any, list[int]] | None:
    """Classify's model chooser shipped in ``reference/`` (:mod:`core.classify.router`) and the index in
    ``choices`` of each model set it routes to; None when there is none for the shipped models. Raises
    :class:`core.classify.router.RouterError` for a file that cannot be read."""
    from ..classify import router

    return router.for_choices(choices, root or reference.REFERENCE_DIR)


def chooser_file(root: Path | None = None) -> Path:
    """Where ``python -m core router`` writes the model chooser: beside the shipped bundles."""
    from ..classify import router

    return (root or reference.REFERENCE_DIR) / router.FILE


def provenance(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeats, protocol, backend, device and date range of a set of runs: what every 'ours' number carries."""
    if not runs:
        return {"repeats": 0}
    dates = sorted(r.get("finished_at", "")[:10] for r in runs)
    return {"repeats": len(runs), "protocol": _describe(runs[0]),
            "backend": runs[0]["env"].get("backend"), "device": runs[0]["env"].get("device"),
            "date": dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}",
            "keras": runs[0]["env"].get("versions", {}).get("keras")}


def _describe(run: dict[str, Any]) -> str:
    """The run's protocol in one line, as the current code words it (a record's stored ``describe`` is the
    wording of the code that made it, which may omit an option it did not yet mention, such as the image
    size); the stored text where the protocol no longer parses."""
    try:
        return Protocol.from_dict(run["protocol"]).describe()
    except (KeyError, TypeError, ValueError):
        return run.get("describe", "")


def provenance_line(runs: list[dict[str, Any]], source: str | None = None) -> str:
    """:func:`provenance` in one line, with where the runs come from."""
    p = provenance(runs)
    if not p["repeats"]:
        return "no repeats"
    n = p["repeats"]
    text = (f"{count_text(n, 'repeat')} · protocol: {p['protocol']} · backend {p['backend']} on "
            f"{p['device']} · {p['date']}")
    return f"{text} · {source}" if source else text


def best_experiment(experiments: list[Experiment], dataset: str) -> Experiment | None:
    """The experiment to show for a dataset: most repeats, then most recent."""
    mine = [e for e in experiments if e.protocol.dataset == dataset and e.runs]
    if not mine:
        return None
    return max(mine, key=lambda e: (len(e.runs), max(r["finished_at"] for r in e.runs)))


def protocol_differences(protocols: list[Protocol]) -> list[str]:
    """Names of the protocol fields that differ between experiments (what an option-effect table varies)."""
    if len(protocols) < 2:
        return []
    dicts = [p.to_dict() for p in protocols]
    return [k for k in dicts[0] if k not in ("data_path",) and any(d[k] != dicts[0][k] for d in dicts[1:])]


def option_name(name: str) -> str:
    """A protocol field as a person knows it: its Train-form label, else its command-line flag (a table that
    said "differ in: reduce_lr" showed the Python name)."""
    from dataclasses import fields

    found = {f.name: f.metadata.get("option") for f in fields(Protocol)}.get(name)
    return (found.label or found.flag) if found else name.replace("_", " ")


def option_value(value: Any) -> str:
    """A protocol value in words: switches on/off (not True/False), None the paper's default."""
    if value is None:
        return "default"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {option_value(v)}" for k, v in value.items())
    return f"{value:g}" if isinstance(value, float) else str(value)


def experiment_id(exp: Experiment, exps: list[Experiment]) -> str:
    """The id a deep link names ``exp`` by: its protocol key, with ``-reference`` added when the shipped
    reference and the user's cache both hold that key (a bundle keeps the key of the run it came from)."""
    twins = [e for e in exps if e.key == exp.key]
    return f"{exp.key}{REFERENCE_SUFFIX}" if len(twins) > 1 and exp.source == REFERENCE else exp.key


def find_experiment(exps: list[Experiment], wanted: str | None) -> Experiment | None:
    """The experiment a deep link names: an exact id first, else the experiment with that key and the most
    repeats (a link made before a reference bundle of the same key existed still opens something)."""
    if not wanted:
        return None
    exact = [e for e in exps if experiment_id(e, exps) == wanted]
    if exact:
        return exact[0]
    key = wanted.removesuffix(REFERENCE_SUFFIX)
    same = [e for e in exps if e.key == key]
    return max(same, key=lambda e: len(e.runs)) if same else None


def protocol_summary(protocol: Protocol) -> str:
    """What sets a protocol apart from the paper's for its dataset, in a few words ("paper protocol" if
    nothing does); the full protocol goes in a caption."""
    base = Protocol(dataset=protocol.dataset, data_path=protocol.data_path).to_dict()
    mine = protocol.to_dict()
    parts = []
    for name, template in _LABEL_FIELDS.items():
        value = mine.get(name)
        if value == base.get(name) or value is None:
            continue
        if isinstance(value, bool):
            parts.append(template.format("on" if value else "off") if "{}" in template
                         else (template if value else f"no {template}"))
        else:
            parts.append(template.format(value))
    return ", ".join(parts) or "paper protocol"


def experiment_label(exp: Experiment) -> str:
    """A short selectbox label: repeats, where it comes from, what differs from the paper, when."""
    when = max(r["finished_at"] for r in exp.runs)[:10]
    return (f"{count_text(len(exp.runs), 'repeat')} · {SHORT_SOURCE.get(exp.source, exp.source)} · "
            f"{protocol_summary(exp.protocol)} · {when}")


FEW_STEPS = 1000
"""A head trained for fewer optimizer steps than this (steps per epoch x its epoch budget) has barely left its
random start: the quick run (2,400 training images, 12 epochs of batch 32: 900 steps) is such a run, the
paper's Fashion-MNIST (48,000 images, 50 epochs: 75,000) is not."""


def few_steps_note(runs: list[dict[str, Any]]) -> str | None:
    """Why a tiny job's gain or loss says little about the paper's question, or None for a job large enough.

    Why: a fresh softmax head on a few hundred images gets a few optimizer steps per epoch; its accuracy, and
    so the "gain" and its p-value, measure how far those steps carried it, not whether a second stage helps
    (a 160-image Dogs & Cats job read -43.70 pp "not significant" with no word on this)."""
    if not runs:
        return None
    protocol = runs[0].get("protocol", {})
    train = int((runs[0].get("dataset", {}).get("sizes") or {}).get("train") or 0)
    batch, epochs = int(protocol.get("batch_size") or 32), int(protocol.get("epochs") or 1)
    steps = math.ceil(train / batch) if train else 0
    if not steps or steps * epochs >= FEW_STEPS:
        return None
    return (f"A job this small says little about the paper's question: {train:,} training images in batches of "
            f"{batch} give each head {steps} optimizer step{'s' if steps != 1 else ''} per epoch, "
            f"{steps * epochs:,} in all at most, so a fresh softmax head has barely left its random start and "
            "the gain above (and its p-value) measures how far those steps carried it. Like the Overview's quick "
            "run it shows the whole loop working; for the paper's effect use more images and epochs (the paper: "
            "all of them, 50 epochs).")
