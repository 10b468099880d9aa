"""Command line: ``python -m core run ...`` trains an experiment headlessly and prints Tables 1 and 2."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..protocol.config import MAX_REPEATS, Protocol
from ..protocol.options import add_arguments, values_from_args
from ..protocol.events import (BatchNormEvent, EpochEvent, LoadingEvent, RepeatEvent, ResumedEvent, StoredEvent,
                               WaitingEvent, event_kind)
from ..protocol.words import count_text

COMMANDS: dict[str, Any] = {}
"""Sub-command name -> (help, add-arguments function, handler); :mod:`core.cli.jobs` and
:mod:`core.cli.reports` register theirs here too (the package imports them: :mod:`core.cli`)."""


def command(name: str, help: str, add_arguments):
    def register(handler):
        COMMANDS[name] = (help, add_arguments, handler)
        return handler
    return register


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that define an experiment (shared by ``run``, ``submit``, ``report`` and ``sweep``): one
    per protocol field, derived from its declaration (:mod:`core.protocol.options`), plus the repeat count and
    the Face Mask version-2 shortcut."""
    add_arguments(parser, Protocol)
    parser.add_argument("--repeats", type=int, default=20, help="number of repeats (paper: 20)")
    parser.add_argument("--paper-v2", action="store_true", help="Face Mask version 2: --patience 5 --reduce-lr")


def protocol_from_args(args: argparse.Namespace) -> Protocol:
    """The protocol the options describe; raises ValueError (one line for the user) for bad values."""
    if not 1 <= args.repeats <= MAX_REPEATS:
        raise ValueError(f"--repeats must be between 1 and {MAX_REPEATS} (got {args.repeats})")
    values = values_from_args(args, Protocol)
    if args.paper_v2:
        values.update(patience=5, reduce_lr=True)
    return Protocol(**values)


def add_cache_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", metavar="DIR", help="cache folder (default: $TWO_STAGE_CACHE or ./cache)")


def add_executor_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    """Where repeats train (shared by ``run``, ``submit`` and ``worker``); never part of the protocol key."""
    g = parser.add_argument_group("executor (docs/ray.md)")
    g.add_argument("--executor", choices=("local", "ray"),
                   help=f"local: in this process; ray: one Ray task per missing repeat (default: {default})")
    g.add_argument("--ray-address", metavar="ADDRESS",
                   help="Ray cluster to use (implies --executor ray; default: $TWO_STAGE_RAY_ADDRESS, else "
                        "$RAY_ADDRESS or a Ray instance started here)")
    g.add_argument("--ray-cpus", type=float, default=1.0, metavar="N", help="CPUs per task (default 1)")
    g.add_argument("--ray-gpus", type=float, default=0.0, metavar="N",
                   help="GPUs per task, fractions share one (0.25: four repeats per GPU; default 0)")
    g.add_argument("--ray-retries", type=int, default=3, metavar="N",
                   help="re-runs of a task whose process or node died (default 3)")
    g.add_argument("--ray-ship-data", action="store_true",
                   help="load the dataset here once and ship it to the nodes (default: each node loads it)")


def executor_from_args(args: argparse.Namespace):
    """The :class:`core.training.cluster.Executor` the options ask for, or None when they chose none."""
    from ..training.cluster import Executor

    kind = args.executor or ("ray" if args.ray_address else None)
    if kind is None:
        return None
    return Executor(kind, args.ray_address, args.ray_cpus, args.ray_gpus, args.ray_retries, args.ray_ship_data)


def print_tables(runs: list[dict], out=None) -> None:
    import pandas as pd

    from ..protocol import paper
    from ..results import stats

    out = out or sys.stdout  # looked up at call time, so a redirected stdout (tests, callers) is honoured
    if not runs:
        return
    protocol = Protocol.from_dict(runs[0]["protocol"])
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 4):
        print(f"\nTable 1 (ours): {len(runs)} repeats; {protocol.describe()}", file=out)
        print(stats.table1(runs).to_string(), file=out)
        print_per_class(runs, out)
        for column in paper.columns_for(protocol.dataset):
            print(f"\nTable 1 (paper, {column}; {paper.REPEATS} repeats):", file=out)
            print(paper.table1(column).to_string(), file=out)
        table2 = stats.table2(runs)
        if not table2.empty:
            print("\nTable 2 (ours): paired two-tailed tests of test accuracy", file=out)
            print(table2.drop(columns=["alpha"]).to_string(index=False), file=out)
        print(f"\nTable 2 (paper):\n{paper.table2().to_string(index=False)}", file=out)
        print_table3(runs, out)


def print_per_class(runs: list[dict], out=None) -> None:
    """Per-class recall, precision and F1 of every method after Table 1, with the worst class."""
    from ..protocol.vocabulary import method_title
    from ..results import metrics

    out = out or sys.stdout
    table = metrics.per_class_summary(runs)
    if table.empty:
        return
    table["method"] = table["method"].map(method_title)
    table["test images per repeat"] = table["test images per repeat"].map(lambda v: "-" if v != v else f"{v:.0f}")
    print(f"\nPer class (test split, means over {count_text(int(table['repeats'].max()), 'repeat')}; recall is the "
          "class's accuracy; the worst class is each repeat's lowest recall, averaged):", file=out)
    print(table.drop(columns=["repeats"]).to_string(index=False, float_format=lambda v: f"{v:.4f}",
                                                   na_rep="-"), file=out)


def print_table3(runs: list[dict], out=None) -> None:
    """Table 3: each head against four stage-one baselines, and the verdict of the documented rule."""
    from ..results import stats

    out = out or sys.stdout
    for line in stats.at_chance(runs):
        print(f"\nWarning: {line}", file=out)
    table = stats.table3(runs)
    if table.empty:
        return
    shown = table[["comparison", "n", "mean difference", "ci low", "ci high", "p (t-test)", "p (Holm)",
                   "significant", "share of gain"]].copy()
    for col in ("mean difference", "ci low", "ci high"):
        shown[col] = shown[col].map(lambda v: "-" if v != v else f"{100 * v:+.2f} pp")  # NaN: one repeat
    shown["share of gain"] = shown["share of gain"].map(lambda v: "-" if v != v else f"{100 * v:.0f}%")
    shown["p (t-test)"] = shown["p (t-test)"].map(lambda v: "-" if v != v else f"{v:.2g}")
    shown["p (Holm)"] = ["primary" if primary else "-" if v != v else f"{v:.2g}"
                         for primary, v in zip(table["primary"], table["p (Holm)"])]
    print("\nTable 3 (ours): what explains the gain (test accuracy, paired over repeats; the primary comparison "
          "is the Adam head against stage one with both fixes, the other p-values also Holm-adjusted)", file=out)
    print(shown.to_string(index=False), file=out)
    print(f"Verdict: {stats.verdict(runs)}", file=out)


class ProgressPrinter:
    """Progress lines per repeat and epoch, with a rough time left for the repeat's stage."""

    def __init__(self, out=None):
        self.out, self.started = out or sys.stderr, time.monotonic()

    def __call__(self, event: dict) -> None:
        kind = event_kind(event)
        line = getattr(self, f"_{kind}", None)
        if line is not None:
            text = line(event)
            if text:
                self._say(text)

    @staticmethod
    def _loading(event: LoadingEvent) -> str:
        return f"loading {event['dataset']} ..."

    @staticmethod
    def _repeat(event: RepeatEvent) -> str:
        where = f" on {event['node']} (pid {event['pid']})" if "node" in event else ""  # a Ray task
        return f"repeat {event['repeat'] + 1}/{event['repeats']}{where}"

    @staticmethod
    def _epoch(event: EpochEvent) -> str:
        logs = event["logs"]
        return (f"  repeat {event['repeat'] + 1} {event['stage']} epoch {event['epoch']}/{event['epochs']}: "
                f"acc {logs.get('accuracy', 0):.4f} val_acc {logs.get('val_accuracy', 0):.4f} "
                f"({logs.get('seconds', 0):.1f}s)")

    @staticmethod
    def _stored(event: StoredEvent) -> str:
        return f"  repeat {event['repeat'] + 1} stored" + (f" (by {event['by']})" if "by" in event else "")

    @staticmethod
    def _waiting(event: WaitingEvent) -> str:
        return (f"  repeat {event['repeat'] + 1} is being trained by another process (pid "
                f"{event.get('holder_pid')} on {event.get('holder_host')}); waiting for it")

    @staticmethod
    def _batchnorm(event: BatchNormEvent) -> str:
        if not event.get("layers"):
            return ""
        return f"  repeat {event['repeat'] + 1}: re-estimating {event['layers']} BatchNorm layer(s)"

    @staticmethod
    def _resumed(event: ResumedEvent) -> str:
        return f"  resumed {event['stage']} after epoch {event['resumed_at_epoch']}"

    def _say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {text}", file=self.out, flush=True)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    add_protocol_arguments(parser)
    add_cache_argument(parser)
    parser.add_argument("--out", metavar="FILE", help="write the run records as JSON here")
    add_executor_arguments(parser, default="local")


def say_precision(protocol: Protocol) -> None:
    """bfloat16 on a CPU without bf16 units still runs, slower: say so before hours are spent."""
    from ..training import env

    support = env.precision_support(protocol.precision)
    if support["note"]:
        print(f"note: {support['note']}", file=sys.stderr)
    elif protocol.precision == "bfloat16":
        print(f"precision: bfloat16 on {support['bf16_units']}", file=sys.stderr)


def check_out_file(out: str | None) -> None:
    """Refuse an ``--out`` that could not be written (a missing folder, a folder itself, no permission) with
    one line before training, not after hours of it."""
    if not out:
        return
    path = Path(out).expanduser()
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name, e.g. {path / 'records.json'}")
    if not folder.is_dir():
        raise ValueError(f"--out {out}: the folder {folder} does not exist; create it first or choose another")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"--out {out}: this file cannot be written here (no permission)")


@command("run", "train an experiment in this process and print Tables 1-3", _add_run_arguments)
def _run(args: argparse.Namespace) -> int:
    protocol = protocol_from_args(args)
    check_out_file(args.out)  # before the imports below, which load TensorFlow and print its start-up lines

    from ..data.datasets import DatasetUnavailable
    from ..training.experiment import run_experiment
    from ..results.store import RunStore, export_json
    store = RunStore(args.cache)
    if store.read_only:
        runs = [r for r in (store.get(protocol.key(), i) for i in range(args.repeats)) if r is not None]
        print(f"note: the cache {store.root} is read-only: {len(runs)} of {count_text(args.repeats, 'repeat')} "
              "are stored there and shown; nothing new can be trained into it (use --cache DIR for a writable one).",
              file=sys.stderr)
        print_tables(runs)
        if args.out and runs:
            Path(args.out).write_text(export_json(runs))
            print(f"\nrecords written to {args.out}")
        return 0 if len(runs) == args.repeats else 2
    say_precision(protocol)
    try:
        runs = run_experiment(protocol, args.repeats, store, progress=ProgressPrinter(),
                              executor=executor_from_args(args) or "local")
    except DatasetUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        done = sum(store.has(protocol, i) for i in range(args.repeats))
        print(f"\ninterrupted: {count_text(done, 'finished repeat')} stored in {store.root}; "
              "run the same command again to continue.", file=sys.stderr)
        return 130
    print_tables(runs)
    if args.out:
        Path(args.out).write_text(export_json(runs))
        print(f"\nrecords written to {args.out}")
    return 0


def _add_bundle_arguments(parser: argparse.ArgumentParser) -> None:
    add_cache_argument(parser)
    parser.add_argument("--name", help="bundle folder under --dest (default from the protocol: fashion-mnist, "
                                       "dogs-cats, face-mask-v1, face-mask-v2, ...); without --key it also picks "
                                       "the experiment that ships under this name")
    parser.add_argument("--key", help="experiment key (default: the one with the most finished repeats)")
    parser.add_argument("--repeat", type=int, metavar="N",
                        help="the repeat whose models to ship, numbered from 1 as everywhere a person reads it "
                             "(records store it as index N-1; default: the median repeat)")
    parser.add_argument("--data", metavar="PATH", help="where the experiment's dataset is now, if not at the "
                                                       "recorded path (needed for the statistics shipped with "
                                                       "the models)")
    parser.add_argument("--dest", metavar="DIR", help="default: $TWO_STAGE_REFERENCE, else reference/ in the project")
    parser.add_argument("--records-only", action="store_true",
                        help="ship the records but no models (a second protocol of a dataset whose models "
                             "another bundle ships, e.g. face-mask-v2 beside face-mask-v1)")


@command("bundle", "copy a finished experiment into reference/ as the app's shipped results",
         _add_bundle_arguments)
def _bundle(args: argparse.Namespace) -> int:
    from ..app import reference
    from ..data.datasets import DatasetUnavailable
    from ..results.store import RunStore

    store = RunStore(args.cache)
    key = args.key or reference.choose_experiment(store, args.name)
    dest_root = Path(args.dest) if args.dest else reference.REFERENCE_DIR
    try:
        model_repeat = None if args.repeat is None else args.repeat - 1  # records number repeats from 0
        dest = reference.build_bundle(store, key, dest_root, model_repeat, name=args.name, data_path=args.data,
                                      records_only=args.records_only,
                                      report=lambda line: print(line, file=sys.stderr))
    except (DatasetUnavailable, OSError, ValueError) as exc:  # one line; build_bundle has undone everything
        print(f"error: {str(exc).rstrip('.')}. Nothing was changed in {dest_root}.", file=sys.stderr)
        return 2
    print(f"wrote {dest} (experiment {key}, {len(store.runs(key))} repeats)")
    for line in reference.describe(dest):
        print(f"  {line}")
    return 0


def _add_identify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="+", help="bundle folders under --dest (e.g. face-mask-v1)")
    parser.add_argument("--data", metavar="PATH", help="where the records' dataset is now, if not at the "
                                                       "recorded path")
    parser.add_argument("--dest", metavar="DIR", help="default: $TWO_STAGE_REFERENCE, else reference/")


@command("identify", "add their data's identity (form, fingerprint, test images duplicating training ones) to "
                     "records made before records carried it, checking that the data reproduces every split",
         _add_identify_arguments)
def _identify(args: argparse.Namespace) -> int:
    from ..app import reference
    from ..app.identify import identify_file
    from ..data.datasets import DatasetUnavailable

    root = Path(args.dest) if args.dest else reference.REFERENCE_DIR
    for name in args.name:
        records = root / name / "records.json"
        if not records.is_file():
            raise ValueError(f"{records} does not exist")
        try:
            done = identify_file(records, args.data, report=lambda line: print(f"  {name} repeat {line}"))
        except DatasetUnavailable as exc:
            raise ValueError(str(exc)) from None
        print(f"{name}: {done} records now say which data made them")
    return 0


def _add_precise_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="+", help="bundle folders under --dest (e.g. dogs-cats-64px-1000)")
    add_cache_argument(parser)
    parser.add_argument("--data", metavar="PATH", help="where the records' dataset is now, if not at the "
                                                       "recorded path")
    parser.add_argument("--dest", metavar="DIR", help="default: $TWO_STAGE_REFERENCE, else reference/")


@command("precise-bn", "add PreciseBN's reading (fvcore's update_bn_stats) to shipped records, from the stage-one "
                       "models their experiment kept in --cache; nothing is retrained", _add_precise_arguments)
def _precise(args: argparse.Namespace) -> int:
    from ..app import reference
    from ..app.precise import precise_file
    from ..data.datasets import DatasetUnavailable
    from ..results.store import RunStore

    root = Path(args.dest) if args.dest else reference.REFERENCE_DIR
    store = RunStore(args.cache)
    for name in args.name:
        records = root / name / "records.json"
        if not records.is_file():
            raise ValueError(f"{records} does not exist")
        try:
            done = precise_file(records, store, args.data, report=lambda line: print(f"  {name} {line}"))
        except DatasetUnavailable as exc:
            raise ValueError(str(exc)) from None
        print(f"{name}: {done} records now carry PreciseBN's reading")
    return 0


def _add_router_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="DATASET=PATH", action="append", default=[],
                        help="where a shipped photo dataset's images are, e.g. dogs-cats=~/data/dogs-cats "
                             "(repeat for each; Fashion-MNIST is found where the app finds it)")
    parser.add_argument("-n", "--images", type=int, default=1000,
                        help="images per dataset, 30 %% of them held out to measure the router (default 1000)")


@command("router", "fit Classify's model chooser on the shipped models' features (run after `bundle` changes a "
                   "shipped model)", _add_router_arguments)
def _router(args: argparse.Namespace) -> int:
    import time

    from ..app import catalog
    from ..training import env
    from ..classify import router
    from ..classify.classify import load_models
    from ..data.datasets import DatasetUnavailable

    paths = dict(item.split("=", 1) for item in args.data if "=" in item)
    if len(paths) != len(args.data) or args.images < 10:
        raise ValueError("give --data as DATASET=PATH and at least 10 images per dataset")
    shipped = [c for c in catalog.models() if c.shipped and c.ood_path]
    try:
        images = [router.sample_images(c.dataset, paths.get(c.dataset), args.images) for c in shipped]
        models = [load_models(c.paths, c.class_names, c.ood_path) for c in shipped]
        fitted = router.build_for(models, [c.dataset for c in shipped],
                                  [router.fingerprint(c.dataset, c.key, c.repeat) for c in shipped], images,
                                  report=lambda line: print(line, file=sys.stderr),
                                  provenance=f"{time.strftime('%Y-%m-%d')} · {args.images} images per dataset, "
                                             f"seed 0 · {env.backend()} on {env.device()} · "
                                             + ", ".join(f"{k} {v}" for k, v in env.versions().items()))
    except (DatasetUnavailable, router.RouterError, OSError) as exc:
        print(f"error: {exc} Nothing was changed.", file=sys.stderr)
        return 2
    out = fitted.save(catalog.chooser_file())
    print(f"wrote {out}: how often the model chooser preselects the model of a held-out image's dataset")
    for name, acc, rank in zip(fitted.datasets, fitted.accuracy, fitted.rank_accuracy):
        print(f"  {name}: {acc:.1%} (the rank rule it replaces: {rank:.1%})")
    return 0


class OneLineParser(argparse.ArgumentParser):
    """A bad option is one line that names it and says where the help is: ``run`` has some forty options, and
    argparse's default printed their whole usage before the error, which scrolled it out of sight."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists every option)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m core",
        description="Two-stage CNN training (Zhou): run the paper's experiments and keep every run's record.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, _handler) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..results.store import StoreError

    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.command][2](args)
        sys.stdout.flush()  # here, not at exit, so a reader that has gone is caught below
        return code
    except (ValueError, StoreError) as exc:  # bad options, an unusable cache: a user's problem, not a crash
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `python -m core jobs | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout again at exit
        return 1
