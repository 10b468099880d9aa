"""The results tables of README.md and docs/, generated from the shipped records in ``reference/``.

Why generated: hand-typed numbers drift from the records they describe (a bundle is rebuilt, a run is added).
``python -m core summary`` prints every table; ``python -m core summary --write README.md docs/results.md``
rewrites each table between its marker comments (``<!-- summary:NAME -->`` ... ``<!-- /summary:NAME -->``), and
``tests/test_summary.py`` fails while a committed table differs from what the records give.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from ..protocol import paper
from ..protocol.vocabulary import HEAD_NAMES, METHODS
from ..results import stats
from . import catalog, reference

BASELINE_ROWS = {"reported": "as the paper reports it (last epoch)", "best": "best checkpoint",
                 "bn": "BatchNorm statistics re-estimated", "best_bn": "both"}
"""Table 3's rows in the README's words (:data:`core.results.stats.BASELINES`)."""
HEAD_COLUMNS = [f"+ {name}" for name in HEAD_NAMES.values()]
_BLOCK = re.compile(r"(<!-- summary:([a-z0-9-]+) -->\n)(.*?)(<!-- /summary:\2 -->)", re.DOTALL)


# ----------------------------------------------------------------------------------------------- numbers

def _pct(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.2f} %"


def _pp(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{100 * value:+.2f} pp"


def _p(value: float) -> str:
    """Two significant digits, trailing zeros kept: 0.090, 0.00019, 1.6e-05."""
    return "–" if not math.isfinite(value) else f"{value:#.2g}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ tables

def headline_experiments() -> list[tuple[str, Any]]:
    """``(paper column, experiment)`` for every column of the paper's Table 1 that a shipped experiment
    reproduces: the one with the most repeats (the column without the outlier is a reading of v2, not a run)."""
    exps = catalog.experiments(None)
    out = []
    for column in paper.TABLE2:
        matching = [e for e in exps if paper.paper_column(e.protocol) == column]
        best = catalog.best_experiment(matching, paper.COLUMNS[column][0])
        if best is not None:
            out.append((column, best))
    return out


def headline() -> str:
    """Our test accuracy per method (mean ± standard deviation over repeats) beside the paper's."""
    rows = []
    for column, exp in headline_experiments():
        table = stats.table1(exp.runs)
        sizes = exp.runs[0]["dataset"].get("sizes") or {}
        images = (f"{sizes['train'] + sizes['val']:,} / {sizes['test']:,}"
                  if {"train", "val", "test"} <= set(sizes) else "–")
        ours = [f"{_pct(row['test mean'])} ± {100 * row['test std']:.2f}" for _, row in table.iterrows()]
        theirs = " / ".join(f"{100 * paper.TABLE1[column][m][2]:.2f}" for m in METHODS) + " %"
        rows.append([column, str(len(exp.runs)), images, *ours, theirs])
    return _markdown(["dataset (paper's column)", "repeats", "images: train + val / test", "stage one (test)",
                      *HEAD_COLUMNS, "paper: stage one / Adam / SGD"], rows)


def table3() -> str:
    """Adam head minus stage one under each reading of stage one (paired over repeats: mean, 95 % CI, t-test
    p), and the paper's gain."""
    found = headline_experiments()
    cells: dict[str, list[str]] = {b: [] for b in BASELINE_ROWS}
    for _, exp in found:
        table = stats.table3(exp.runs)
        adam = table[table["head"] == "adam"].set_index("baseline") if not table.empty else None
        no_bn = stats.bn_layers(exp.runs) == 0
        for baseline in BASELINE_ROWS:
            if no_bn and baseline in ("bn", "best_bn"):
                cells[baseline].append("same as reported (no BatchNorm layer)" if baseline == "bn"
                                       else "same as best checkpoint")
            elif adam is None or baseline not in adam.index:
                cells[baseline].append("–")
            else:
                row = adam.loc[baseline]
                cells[baseline].append(f"{_pp(row['mean difference'])} ({_pp(row['ci low'])[:-3]} to "
                                       f"{_pp(row['ci high'])[:-3]}), p = {_p(row['p (t-test)'])}")
    rows = [[label, *cells[b]] for b, label in BASELINE_ROWS.items()]
    rows.append(["*the paper's gain*", *(_paper_gain(column) for column, _ in found)])
    header = ["stage one read as", *(f"{column} ({len(exp.runs)})" for column, exp in found)]
    return _markdown(header, rows)


def _paper_gain(column: str) -> str:
    a, b, _, p = paper.TABLE2[column]
    text = f"{_pp(b - a)}, p = {_p(p)}"
    without = f"{column} (excluding one outlier)"
    if without in paper.TABLE2:
        a, b, _, p = paper.TABLE2[without]
        text += f" ({_pp(b - a)}, p = {_p(p)} without one outlier)"
    return text


def _shipped() -> list[tuple[Any, list[dict[str, Any]]]]:
    """Every shipped bundle that holds records, with its records: ``(folder, runs)``."""
    found = [(folder, reference.load_runs(folder)) for folder in reference.bundles()]
    return [(folder, runs) for folder, runs in found if runs]


def bundles() -> str:
    """Every shipped experiment: where it ran and its mean test accuracy per method."""
    rows = []
    for folder, runs in _shipped():
        env = runs[0]["env"]
        means = stats.table1(runs)["test mean"]
        engine = runs[0]["protocol"].get("engine", "plain")
        models = "models + records" if reference.model_info(folder) else "records only"
        where = f"{engine} engine, {env.get('backend')} on {env.get('device')}"
        rows.append([f"`{folder.name}`", str(len(runs)), where, catalog.provenance(runs)["date"], models,
                     *(_pct(v) for v in means)])
    return _markdown(["bundle", "repeats", "ran on", "finished", "ships", "stage one (test)", *HEAD_COLUMNS], rows)


def reports() -> str:
    """Each related report's small plan as shipped (``reference/reports/``): per experiment its swept value,
    data, repeats, wall time and mean test accuracy of stage one (as reported and with BatchNorm re-estimated)
    and both heads."""
    from ..studies import reports as studies

    rows = []
    for report_id, report in studies.REPORTS.items():
        for exp in catalog.report_experiments(report_id):
            first = exp.runs[0]
            means = stats.table1(exp.runs)["test mean"]
            bn = stats.bn_layers(exp.runs)
            reported = first["protocol"]["stage1_eval"]
            bn_mean = (sum(stats.metric(r, "stage1", "test", f"{reported}_bn") for r in exp.runs) / len(exp.runs)
                       if bn else float("nan"))
            sizes = first["dataset"].get("sizes") or {}
            rows.append([report_id, exp.protocol.model_id, _point(report, exp.protocol),
                         f"{catalog.dataset_form(first)}, {sizes.get('train', 0) + sizes.get('val', 0):,} / "
                         f"{sizes.get('test', 0):,}", str(len(exp.runs)), _wall(exp.runs),
                         *(_pct(v) for v in means), _pct(bn_mean)])
    return _markdown(["report", "model", "step", "data (train + val / test)", "repeats", "wall time",
                      "stage one (test)", *HEAD_COLUMNS, "stage one, BatchNorm re-estimated"], rows)


def _point(report: Any, protocol: Any) -> str:
    """Which step (and swept value) of the report's small plan an experiment is."""
    values = protocol.to_dict()
    for step in sorted(report.plans["small"], key=lambda s: -len(s.options)):  # the most specific step first
        swept = step.sweep.param if step.sweep else None
        if any(values.get(k) != v for k, v in step.options.items() if k not in (swept, "image_size")):
            continue
        if step.sweep is None:
            return step.title
        if values.get(swept) in step.sweep.values:
            return f"{step.title}: {swept.replace('_', ' ')} {values[swept]}"
    return protocol.describe()


def _wall(runs: list[dict[str, Any]]) -> str:
    """The repeats' wall time together (each from its start to its record), as a duration."""
    from datetime import datetime

    from ..protocol.words import duration

    try:
        seconds = sum((datetime.fromisoformat(r["finished_at"]) - datetime.fromisoformat(r["started_at"]))
                      .total_seconds() for r in runs)
    except (KeyError, ValueError):
        return "–"
    return duration(seconds)


def verdicts() -> str:
    """Each headline experiment's verdict (:func:`core.results.stats.verdict`, Adam head): the same sentences
    the Overview shows, so the docs' reading of Table 3 is the rule's, not a retyped one."""
    lines = []
    for column, exp in headline_experiments():
        lines.append(f"- **{column}** ({catalog.dataset_form(exp.runs[0])}, {len(exp.runs)} repeats): "
                     f"{stats.verdict(exp.runs, 'adam')}")
    return "\n".join(lines) + "\n"


ENVIRONMENT_LIBRARIES = ("python", "numpy", "scipy", "keras", "jax", "tensorflow-cpu")


def environment() -> str:
    """Which software and hardware produced each shipped bundle (the first record's; a bundle is one run)."""
    rows = []
    for folder, runs in _shipped():
        env = runs[0]["env"]
        versions = env.get("versions", {})
        precision = (env.get("precision") or {}).get("name") or runs[0]["protocol"].get("precision", "float32")
        rows.append([f"`{folder.name}`", str(env.get("device", "–")), precision,
                     *(versions.get(lib, "–") for lib in ENVIRONMENT_LIBRARIES)])
    return _markdown(["bundle", "device", "precision", *ENVIRONMENT_LIBRARIES], rows)


def engines() -> str:
    """Each GPU bundle against the CPU run of the same protocol shipped beside it (``NAME`` and ``NAME-cpu``):
    means and Welch's t-test (unequal variances; the repeats are not paired across engines)."""
    from scipy.stats import ttest_ind

    rows = []
    shipped = {folder.name: runs for folder, runs in _shipped()}
    for name, gpu_runs in shipped.items():
        cpu_runs = shipped.get(f"{name}-cpu")
        if cpu_runs is None:
            continue
        readings = [("stage one", "stage1", None), ("Adam head", "adam", None)]
        if stats.bn_layers(gpu_runs):
            readings.insert(1, ("stage one, BatchNorm re-estimated", "stage1", "last_bn"))
        for label, method, weights in readings:
            a = [stats.metric(r, method, "test", weights) for r in gpu_runs]
            b = [stats.metric(r, method, "test", weights) for r in cpu_runs]
            p = float(ttest_ind(a, b, equal_var=False).pvalue)
            rows.append([f"`{name}` vs `{name}-cpu`", label, f"{len(a)} / {len(b)}",
                         f"{_pct(sum(a) / len(a))} vs {_pct(sum(b) / len(b))}", _p(p)])
    return _markdown(["bundles (GPU vs CPU)", "reading", "repeats", "mean test accuracy", "Welch p"], rows)


def _ci(mean_low_high: tuple[float, float, float]) -> str:
    mean, low, high = mean_low_high
    return f"{_pp(mean)} ({_pp(low)[:-3]} to {_pp(high)[:-3]})" if math.isfinite(low) else _pp(mean)


def intervention() -> str:
    """The interventions (BatchNorm momentum, augmentation, dropout) wherever the shipped records hold one
    (:func:`core.results.why.intervention_pairs`): per arm its means, the head's gain over stage one as reported and over
    the BN-re-estimated stage one (95 % CIs), the paired reading, and one sentence over them all."""
    from ..results import why

    pairs = why.intervention_pairs(catalog.experiments(None))
    blocks = []
    for control, _, found in pairs:
        rows = [[name, f"{arm['train_images']:,}", str(arm["repeats"]), _pct(arm["stage1"][0]),
                 _pct(arm["stage1_bn"][0]), _pct(arm["head"][0]), _ci(arm["gain"]), _ci(arm["gain_over_bn"])]
                for name, arm in zip(found["arms"], (found["control"], found["treated"]))]
        blocks.append(f"{catalog.dataset_form(control.runs[0])}, {control.protocol.describe()}:\n\n" + _markdown(
            ["arm", "training images", "repeats", "stage one (test)", "stage one, BN re-estimated", "+ Adam head",
             "gain (95 % CI)", "gain over BN-fixed stage one"], rows) + f"\n{found['reading']}\n")
    if not blocks:
        return "No shipped experiment holds an intervention yet.\n"
    return "\n".join(blocks) + f"\n**In short:** {why.interventions_summary([f for *_, f in pairs])}\n"


def precise() -> str:
    """PreciseBN beside exact re-estimation on the same kept models (:func:`core.results.why.precise_split`), per
    dataset whose shipped records carry the reading: the table and its reading."""
    from ..results import why

    exps = catalog.experiments(None)
    blocks = []
    for dataset in sorted({e.protocol.dataset for e in exps}):
        frame, reading = why.precise_split(exps, dataset)
        if frame.empty:
            continue
        first, base = why.precise_source(exps, dataset)
        rows = [[r["arm"], f"{int(r['training images']):,}", str(int(r["repeats"])), _pct(r["stage one"]),
                 _pct(r["PreciseBN"]), _pct(r["PreciseBN, BatchNorm only"]), _pct(r["re-estimated"]),
                 f"{100 * r['share recovered']:.0f} %" if math.isfinite(r["share recovered"]) else "-"]
                for _, r in frame.iterrows()]
        blocks.append(f"{catalog.dataset_form(first.runs[0])}, {base.describe()}:\n\n" + _markdown(
            ["arm", "training images", "repeats", "stage one", "PreciseBN (augmentation, dropout on)",
             "PreciseBN, BatchNorm only", "re-estimated", "share of the lift PreciseBN recovers"], rows)
            + f"\n{reading}\n")
    return "\n".join(blocks) if blocks else "No shipped experiment carries PreciseBN's reading yet.\n"


def sizes() -> str:
    """The size curves wherever the shipped records hold one: per training-set size the head's gain over stage
    one as reported and over the BN-re-estimated stage one (95 % CIs), then the reading."""
    from ..results import why

    exps = catalog.experiments(None)
    blocks = []
    for dataset in sorted({e.protocol.dataset for e in exps}):
        for points in why.families(exps, dataset, "limit"):
            frame, reading = why.size_curve([p.runs for p in points])
            rows = [[f"{int(r['training images']):,}", str(int(r["steps per epoch"])), str(int(r["repeats"])),
                     _ci((r["gain"], r["gain low"], r["gain high"])),
                     _ci((r["gain over BN"], r["gain over BN low"], r["gain over BN high"])), _pp(r["BN lift"])]
                    for _, r in frame.iterrows()]
            base = points[0].protocol.with_(limit=None)
            blocks.append(f"{catalog.dataset_form(points[0].runs[0])}, {base.describe()}:\n\n" + _markdown(
                ["training images", "steps per epoch", "repeats", "gain (95 % CI)", "gain over BN-fixed stage one",
                 "BatchNorm lift of stage one"], rows) + f"\n{reading}\n")
    return "\n".join(blocks) if blocks else "No shipped experiment holds a size curve yet.\n"


def ceilings() -> str:
    """The second-stage readings (cRT, DFR, cRT on BN-re-estimated features) of every shipped experiment whose
    records hold them, beside stage one and the paper's heads (mean test accuracy, 95 % CI)."""
    from ..results import why

    blocks = []
    for exp in catalog.experiments(None):
        frame, reading = why.ceiling(exp.runs)
        if frame.empty or "logistic" not in set(frame["key"]):
            continue
        rows = [[r["second stage"], str(r["repeats"]), f"{_pct(r['test mean'])} ({_pct(r['ci low'])[:-2]} to "
                 f"{_pct(r['ci high'])})"] for _, r in frame.iterrows()]
        blocks.append(f"{catalog.dataset_form(exp.runs[0])}, {exp.protocol.describe()}:\n\n"
                      + _markdown(["second stage", "repeats", "test accuracy (95 % CI)"], rows) + f"\n{reading}\n")
    return "\n".join(blocks) if blocks else "No shipped experiment holds the readings yet.\n"


TABLES: dict[str, Callable[[], str]] = {"headline": headline, "table3": table3, "bundles": bundles,
                                        "reports": reports, "verdicts": verdicts, "environment": environment,
                                        "engines": engines, "intervention": intervention, "precise": precise,
                                        "sizes": sizes, "ceilings": ceilings}
"""Every generated table by the name its markers use."""


# ----------------------------------------------------------------------------------------- the documents

def fill(text: str, tables: dict[str, str]) -> str:
    """``text`` with every marked block replaced by its table; a ValueError for a marker with no table."""
    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in tables:
            raise ValueError(f"no generated table called {name!r}; the tables are {', '.join(tables)}")
        return match.group(1) + tables[name] + match.group(4)

    return _BLOCK.sub(replace, text)


def marked(text: str) -> list[str]:
    """The names of the generated tables a document holds, in order."""
    return [m.group(2) for m in _BLOCK.finditer(text)]


def generate() -> dict[str, str]:
    """Every table, from the records shipped in ``reference/`` (``$TWO_STAGE_REFERENCE``)."""
    return {name: make() for name, make in TABLES.items()}
