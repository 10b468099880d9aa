"""Sub-commands for the related reports' systems: ``architectures``, ``sweep`` and ``report``.

``python -m core architectures`` lists every stage-one builder with its parameter count beside the count its
report publishes. ``python -m core sweep ... --param P --values a,b`` runs (or, with ``--submit``, queues as one
job) a sweep and prints its table. ``python -m core report ID`` runs a report's whole experiment
(:mod:`core.studies.reports`) and prints our numbers beside the report's, including whether the paper's second stage
helps each model.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any, Iterator

from .main import ProgressPrinter, add_cache_argument, add_protocol_arguments, command, protocol_from_args
from ..protocol.events import BackboneEvent, GanEvent, SweepPointEvent
from ..protocol.vocabulary import HEADS, METHOD_NAMES, STAGE_ONE
from ..protocol.words import count_text
from ..studies.reports import REPORTS, SIZES


# ------------------------------------------------------------------------------------------ architectures
def _architectures_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=("paper", *REPORTS), help="only the paper's or one report's models")


@command("architectures", "list every stage-one architecture with its parameter count and source",
         _architectures_arguments)
def _architectures(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..protocol.arch_spec import ARCH_INFO, KINDS

    rows = []
    for arch in ARCH_INFO.values():
        if args.source and arch.source != args.source:
            continue
        rows.append(architecture_row(arch.id))
        print(f"built {arch.id}", file=sys.stderr, flush=True)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 60):
        print(pd.DataFrame(rows).to_string(index=False))
    print("\nparameters: at the input and class count the source uses; frozen backbones count the backbone "
          "(not trained) plus the new final layer (trained). 'published' is the count the report prints.")
    for kind, text in KINDS.items():
        print(f"{kind}: {text}")
    return 0


def architecture_row(architecture: str) -> dict[str, Any]:
    """One line of ``architectures``: the model built at its source's input, counted by Keras."""
    from ..models.counts import source_parameter_counts
    from ..protocol.arch_spec import info
    from ..studies.reports import published_params

    arch = info(architecture)
    counts = source_parameter_counts(architecture)
    published = published_params(architecture)
    return {
        "id": arch.id, "source": "paper" if arch.source == "paper" else f"report {arch.source}",
        "kind": arch.kind, "input": "x".join(map(str, arch.input_shape)) + (" -> 224" if arch.frozen else ""),
        "classes": arch.num_classes,
        "parameters": f"{counts['total']:,}", "trainable": f"{counts['trainable']:,}",
        "published": f"{published[1]:,}" if published else "-",
        "match": ("yes" if published[1] == counts["total"] else "NO") if published else "-",
        "model": arch.title,
    }


# -------------------------------------------------------------------------------------------------- sweep
def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    add_protocol_arguments(parser)
    add_cache_argument(parser)
    parser.set_defaults(repeats=1)
    s = parser.add_argument_group("sweep")
    s.add_argument("--param", required=True, help="the protocol field to vary (learning_rate, batch_size, epochs, "
                                                   "architecture, augment_preset, ...)")
    s.add_argument("--values", required=True, help="comma-separated values, e.g. 1e-2,1e-3,1e-4")
    s.add_argument("--submit", action="store_true", help="queue the sweep as one background job instead")
    s.add_argument("--no-worker", action="store_true", help="with --submit: do not start a local worker")


@command("sweep", "vary one protocol field over values (each point repeated) and print the table", _sweep_arguments)
def _sweep(args: argparse.Namespace) -> int:
    from ..studies.sweeps import Sweep, parse_values

    base = protocol_from_args(args)
    sweep = Sweep(args.param, parse_values(args.param, args.values))
    sweep.protocols(base)  # every point must be a valid protocol before anything trains
    if args.submit:
        return submit_sweep(args, base, sweep, args.repeats)
    with _dataset_errors() as failed:
        points = run_points(args, base, sweep, args.repeats)
    if failed:
        return 2
    if points is None:
        return 130
    print_sweep(points, sweep.param, base)
    return 0


@contextlib.contextmanager
def _dataset_errors() -> Iterator[list]:
    """A dataset that cannot be read becomes one line on stderr, not a traceback; the yielded list is non-empty
    afterwards when that happened."""
    from ..data.datasets import DatasetUnavailable

    failed: list = []
    try:
        yield failed
    except DatasetUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        failed.append(exc)


def submit_sweep(args: argparse.Namespace, base, sweep, repeats: int) -> int:
    from ..jobs.queue import JobQueue, QueueFull
    from .jobs import submit_job

    try:
        submit_job(JobQueue(args.cache), base, repeats, start_worker=not getattr(args, "no_worker", False),
                   sweep=sweep.to_dict())
    except QueueFull as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0


def run_points(args: argparse.Namespace, base, sweep, repeats: int):
    """Run a sweep in this process with progress lines; None when interrupted (finished repeats are kept)."""
    from ..results.store import RunStore
    from ..studies.sweeps import run_sweep

    store = RunStore(args.cache)
    try:
        return run_sweep(base, sweep, repeats, store, progress=SweepPrinter())
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished repeats are stored in {store.root}; run the same command again to "
              "continue.", file=sys.stderr)
        return None


def print_sweep(points, param: str, base, out=sys.stdout) -> None:
    import pandas as pd

    from ..studies.sweeps import table

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"\nSweep of {param} (ours): test accuracy of stage one (mean, std, min, max over repeats), mean "
              "epochs run, macro precision/recall/F1 and BatchNorm-re-estimated test accuracy (stage one), and the "
              "paper's two stage-two heads", file=out)
        print(table(points, param).to_string(index=False), file=out)
        print(f"(every point: {base.describe()}; {param} as in the first column)", file=out)


class SweepPrinter(ProgressPrinter):
    """Progress lines, plus the sweep's point, frozen-backbone caching and GAN training."""

    @staticmethod
    def _sweep_point(event: SweepPointEvent) -> str:
        return f"point {event['sweep_index'] + 1}/{event['points']}: {event['param']} = {event['sweep_value']}"

    @staticmethod
    def _backbone(event: BackboneEvent) -> str:
        what = "read from the feature cache" if event["cached"] else f"computed ({event.get('images')} images)"
        return f"  backbone features, {event['split']}: {what} in {event['seconds']:.1f}s"

    @staticmethod
    def _gan(event: GanEvent) -> str:
        if "gan_epoch" not in event:
            return ""
        if event["gan_epoch"] in (1, event["gan_epochs"]) or event["gan_epoch"] % 10 == 0:
            return (f"  GAN {event['gan_class']} epoch {event['gan_epoch']}/{event['gan_epochs']}: "
                    f"D loss {event['d_loss']:.3f} G loss {event['g_loss']:.3f}")
        return ""


# ------------------------------------------------------------------------------------------------- report
@command("reports", "list the four related reports, their models and the commands that run them",
         lambda parser: None)
def _reports(args: argparse.Namespace) -> int:
    for report in REPORTS.values():
        print(f"{report.label}\n  claims: {report.claims}\n  models: {', '.join(report.models)}\n"
              f"  default dataset: {report.dataset}; here: {report.data_here}")
        for size in SIZES:
            print(f"  {size}: {report.command(size)}")
        print()
    return 0


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help=f"report id: {', '.join(REPORTS)}")
    parser.add_argument("--size", choices=SIZES, default="small",
                        help="small: cut down to run on a CPU in minutes (default); full: the report's recipe")
    parser.add_argument("--dataset", help="dataset to run on (default: the report's; `python -m core reports` lists them)")
    parser.add_argument("--data", metavar="PATH", help="where the dataset is")
    parser.add_argument("--weights", metavar="imagenet|PATH|none",
                        help="ImageNet backbones' weights (reports 002, 004); overrides the plan's")
    parser.add_argument("--repeats", type=int, help="repeats per run (default: the plan's)")
    parser.add_argument("--seed", type=int, default=0, help="split seed; repeat i trains with seed+i")
    parser.add_argument("--submit", action="store_true", help="queue every step as a background job instead")
    parser.add_argument("--ship", action="store_true",
                        help="afterwards, write the plan's records to reference/reports/ID/ (records only), which "
                             "the Related reports page shows as our results from a visitor's first look")
    add_cache_argument(parser)


@command("report", "run a related report's experiment (001-004) and print our numbers beside the report's",
         _report_arguments)
def _report(args: argparse.Namespace) -> int:
    from ..studies import reports

    report = reports.get(args.id)
    plan = step_protocols(report, args)
    print(f"{report.label}\n{report.claims}\nData: {report.data_here}.", file=sys.stderr)
    if args.size == "small":
        print(f"Small size: {report.small_note}.", file=sys.stderr)
    if args.submit:
        return _submit_plan(args, plan)
    started = time.monotonic()
    with _dataset_errors() as failed:
        finished = _run_plan(args, report, plan)
    if failed:
        return 2
    if not finished:
        return 130
    print(f"\nreport {report.id} ({args.size}) finished in {time.monotonic() - started:.0f} s", flush=True)
    if args.ship:
        ship_plan(args, report, plan)
    return 0


def ship_plan(args: argparse.Namespace, report, plan) -> None:
    """Write every record of the plan's experiments to ``reference/reports/<id>/records.json``."""
    from ..app import reference
    from ..results.store import RunStore

    store = RunStore(args.cache)
    runs = []
    for planned in plan:
        points = planned.step.sweep.protocols(planned.protocol) if planned.step.sweep else [planned.protocol]
        for protocol in points:
            runs += [r for r in store.runs(protocol.key()) if r["repeat"] < planned.repeats]
    unique = list({(r["key"], r["repeat"]): r for r in runs}.values())  # a shared point ships once
    file = reference.ship_report_runs(unique, report.id)
    total = reference.total_size_mb()
    print(f"wrote {file}: {count_text(len(unique), 'record')} of {count_text(len({r['key'] for r in unique}), 'experiment')}, "
          f"{file.stat().st_size / 1e6:.1f} MB; {reference.REFERENCE_DIR} holds {total:.1f} MB (budget "
          f"{reference.SIZE_BUDGET_MB:.0f} MB)")


def _run_plan(args: argparse.Namespace, report, plan) -> bool:
    """Run every step in this process, printing ours beside the report's; False when interrupted."""
    for planned in plan:
        step, base, repeats = planned.step, planned.protocol, planned.repeats
        print(f"\n=== {step.title} ===", flush=True)
        if step.sweep is not None:
            points = run_points(args, base, step.sweep, repeats)
            if points is None:
                return False
            print_sweep(points, step.sweep.param, base)
            print_published(report, step)
            print_two_stage([p.runs for p in points], [f"{step.sweep.param} = {p.value}" for p in points])
        else:
            runs = run_single(args, base, repeats)
            if runs is None:
                return False
            print_ours(runs)
            print_metrics(runs)
            print_published(report, step)
    return True


def step_protocols(report, args: argparse.Namespace) -> list[Any]:
    """The chosen plan's steps as protocols (:func:`core.studies.reports.plan`); the first step that does not
    fit the dataset or options stops the command with its one-line reason, before anything trains."""
    from ..studies import reports

    steps = reports.plan(report, args.size, args.dataset, args.data, args.weights, args.seed, args.repeats)
    problem = next((s.problem for s in steps if s.problem), None)
    if problem:
        raise ValueError(problem)
    return steps


def _submit_plan(args: argparse.Namespace, plan) -> int:
    from ..jobs.queue import JobQueue, QueueFull
    from .jobs import submit_job

    queue = JobQueue(args.cache)
    for planned in plan:
        step = planned.step
        try:
            submit_job(queue, planned.protocol, planned.repeats, label=step.title,
                       sweep=step.sweep.to_dict() if step.sweep else None)
        except QueueFull as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 3
    return 0


def run_single(args: argparse.Namespace, protocol, repeats: int):
    from ..training.experiment import run_experiment
    from ..results.store import RunStore

    store = RunStore(args.cache)
    try:
        return run_experiment(protocol, repeats, store, progress=SweepPrinter())
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished repeats are stored in {store.root}.", file=sys.stderr)
        return None


def print_ours(runs: list[dict], out=sys.stdout) -> None:
    """Stage one and both heads (accuracy per split), the paired tests and the verdict: all ours."""
    import pandas as pd

    from ..results import stats

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 4):
        print(f"\nOurs: {count_text(len(runs), 'repeat')}; {runs[0]['describe']}", file=out)
        print(stats.table1(runs).to_string(), file=out)
        tests = stats.table2(runs)
        if len(runs) > 1 and not tests.empty:
            print(tests[["comparison", "repeats used", "n", "mean difference", "p (t-test)"]].to_string(index=False),
                  file=out)
    bn = stats.bn_layers(runs)
    if bn:
        reported = runs[0]["protocol"]["stage1_eval"]
        fixed = [stats.metric(run, "stage1", "test", f"{reported}_bn") for run in runs]
        print(f"Stage one with its {bn} BatchNorm layer(s) re-estimated on the training split (no weight "
              f"changed): test {100 * sum(fixed) / len(fixed):.2f}%", file=out)
    print(f"Does the paper's second stage help? {stats.verdict(runs)}", file=out)


def print_metrics(runs: list[dict], out=sys.stdout) -> None:
    """Per-class precision/recall/F1 and the confusion matrix of stage one and both heads (all repeats)."""
    import pandas as pd

    from ..results import metrics

    names = runs[0]["dataset"]["class_names"]
    for method, title in {"stage1": STAGE_ONE, **{h: METHOD_NAMES[h] for h in HEADS}}.items():
        matrix, n = metrics.experiment_confusion(runs, method)
        if matrix is None:
            continue
        with pd.option_context("display.width", 200, "display.precision", 3):
            print(f"\nPer-class metrics, {title} (test set, {count_text(n, 'repeat')} pooled; support: test "
                  "images of the class in one repeat):", file=out)
            print(metrics.per_class(matrix, names, n).to_string(), file=out)
            print(f"confusion matrix (rows: true class, columns: predicted; {count_text(n, 'repeat')} summed):",
                  file=out)
            print(pd.DataFrame(matrix, index=names, columns=names).to_string(), file=out)


def print_published(report, step, out=sys.stdout) -> None:
    if not step.published:
        print(f"(report {report.id} publishes no number for this step)", file=out)
        return
    print(f"\nReport {report.id}'s published numbers for this step (its own model, data and weights; not ours):",
          file=out)
    for label, value in step.published:
        shown = "-" if value is None else (f"{100 * value:.1f}%" if isinstance(value, float) and value <= 1 else value)
        print(f"  {label}: {shown}", file=out)


def print_two_stage(groups: list[list[dict]], labels: list[str], out=sys.stdout) -> None:
    """Does a two-stage head help this model too? One verdict per point."""
    from ..results import stats

    print("\nDoes the paper's second stage help? (test accuracy, paired over repeats)", file=out)
    for runs, label in zip(groups, labels):
        print(f"  {label}: {stats.verdict(runs)}", file=out)
