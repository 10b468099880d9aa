"""Results: does the second stage really help, and why? The verdict and Table 3, the paper's Tables 1 and 2
beside ours, per-repeat pairs (Figure 16), the images behind the numbers, learning curves and downloads.

Every experiment has a deep link (``?experiment=<key>``) that opens it here.
"""

from __future__ import annotations

import math

import streamlit as st

from core.protocol.vocabulary import HEAD_NAMES, HEADS, METHOD_NAMES, SECOND_STAGE_NAMES, dataset_title
from core.app.catalog import experiment_id, experiment_label, find_experiment
from core.protocol.words import count_text, repeat_name
from ui.charts import curves_figure
from ui.common import experiments, guard
from ui.experiments import EXPERIMENT_PARAM, unknown_link
from ui.format import p_text, pct, signed_pct

WEIGHT_CHOICES = {"protocol's": None, "last epoch": "last", "best checkpoint": "best"}
STAGE1_BN_CHOICES = {"last epoch, BatchNorm re-estimated": "last_bn",
                     "best checkpoint, BatchNorm re-estimated": "best_bn"}
BN_STAGE1 = "stage one, BN re-estimated"  # its name in Tables 1-2 and Figure 16 under a BatchNorm reading
WEIGHT_WORDS = {"last": "last-epoch", "best": "best-checkpoint", "last_bn": "last-epoch BatchNorm-re-estimated",
                "best_bn": "best-checkpoint BatchNorm-re-estimated"}
TRAIN_LABELS = {"inference": "inference mode", "fit": "as reported during fit"}
BASELINE_NAMES = {"reported": "as reported", "best": "best checkpoint", "bn": "BatchNorm re-estimated",
                  "best_bn": "best + BatchNorm"}
COLUMN_NAMES = {"Fashion-MNIST": "Fashion-MNIST", "Cifar-10": "CIFAR-10", "Dogs & Cats": "Dogs & Cats",
                "Face Mask Detection v1": "Face Mask v1", "Face Mask Detection v2": "Face Mask v2",
                "Face Mask Detection v2 (excluding one outlier)": "Face Mask v2, outlier out"}


# ----------------------------------------------------------------------------------- choosing one

def choose_experiment(exps):
    """Dataset and experiment pickers that a deep link can set; the URL always names what is shown."""
    from core.app import catalog
    from core.protocol.vocabulary import DATASETS

    wanted = st.query_params.get(EXPERIMENT_PARAM)
    linked = find_experiment(exps, wanted)
    # a link wins unless it is merely the URL of the previous run (the reader has just picked another one);
    # coming back from another page, the pickers' state is gone and the link wins again
    if wanted and (wanted != st.session_state.get("results_synced") or "results_exp" not in st.session_state):
        if linked is not None:
            st.session_state["results_dataset"] = linked.protocol.dataset
            st.session_state["results_exp"] = experiment_id(linked, exps)
        else:
            st.warning(unknown_link(wanted))
    datasets = sorted({e.protocol.dataset for e in exps}, key=DATASETS.index)
    dataset = st.columns([1, 3])[0].selectbox("Dataset", datasets, format_func=dataset_title, key="results_dataset")
    mine = [e for e in exps if e.protocol.dataset == dataset]
    ids = [experiment_id(e, exps) for e in mine]
    if st.session_state.get("results_exp") not in ids:
        best = catalog.best_experiment(exps, dataset)
        st.session_state["results_exp"] = experiment_id(best, exps) if best in mine else ids[0]
    by_id = dict(zip(ids, mine))
    # the page's full width: an experiment's label names what differs from the paper, which can be long
    chosen = st.selectbox("Experiment", ids, key="results_exp", format_func=lambda i: experiment_label(by_id[i]),
                          help="Repeats · where it comes from · what differs from the paper's protocol · date")
    st.query_params[EXPERIMENT_PARAM] = chosen
    st.session_state["results_synced"] = chosen
    exp = by_id[chosen]
    base = (st.context.url or "").split("?")[0]
    link = f"{base}?{EXPERIMENT_PARAM}={chosen}"
    st.caption(f"Protocol: {exp.protocol.describe()} · key {exp.key} · shareable link: "
               + (f"[{link}]({link})" if base else f"`?{EXPERIMENT_PARAM}={chosen}`"))
    return exp


# ------------------------------------------------------------------------------- the verdict, Table 3

def paper_line(column: str | None) -> str:
    from core.protocol import paper

    if not column:
        return "The paper has no column for this dataset."
    a, b, alpha, p = paper.TABLE2[column]
    judged = "significant" if p < alpha else "not significant"
    return (f"Paper ({COLUMN_NAMES.get(column, column)}, {paper.REPEATS} repeats, Adam head): {pct(a)} → {pct(b)}, "
            f"{signed_pct(b - a)}, p = {p_text(p)} ({judged}). The paper does not measure the BatchNorm or "
            "checkpoint explanations.")


def verdict_section(runs, column: str | None) -> None:
    """The answer first: one sentence per head by :func:`core.results.stats.verdict`'s rule, the paper's beside it."""
    from core.results import stats

    st.subheader("Does the second stage help, and why?")
    for line in stats.at_chance(runs):
        st.warning(line)
    complete = [r for r in runs if "last_bn" in r["stage1"]]
    if not complete:
        st.info("These records were made before stage one was also scored with BatchNorm statistics "
                "re-estimated, so Table 3 and its verdict need newer runs of this protocol.")
        st.caption(paper_line(column))
        return
    for head in HEADS:
        text = stats.verdict(complete, head)
        st.markdown(f"**Ours, {HEAD_NAMES[head]}:** {text}")
    st.caption(paper_line(column))
    if len(complete) < len(runs):
        st.caption(f"Uses the {len(complete)} of {len(runs)} repeats whose records hold the BatchNorm "
                   "re-estimated evaluations (older records lack them).")
    table3_section(complete, column)


def _significance(p: float, alpha: float = 0.05) -> str:
    return "–" if not math.isfinite(p) else ("yes" if p < alpha else "no")


def share_text(share: float) -> str:
    """A fix's share of the head's gain (NaN, shown as a dash, unless that gain is significant:
    :func:`core.results.stats.table3`)."""
    if not math.isfinite(share):
        return "–"
    return f"{100 * share:.0f}%".replace("-0%", "0%")


def holm_text(p: float, primary: bool) -> str:
    """A row's Holm-adjusted p (:func:`core.results.stats.table3`); the declared primary comparison is not
    adjusted, so it says so instead of showing a dash that would read as "not computable"."""
    return "primary" if primary else p_text(p)


def table3_section(runs, column: str | None) -> None:
    """Table 3 as :func:`core.results.stats.table3` makes it: one small table per second stage (the paper's two
    heads, then the readings that train no network where the records hold them), named from the vocabulary."""
    import pandas as pd

    from core.protocol import paper
    from core.results import stats

    st.markdown("#### Table 3: what explains the gain")
    table = stats.table3(runs)
    layers = stats.bn_layers(runs)
    primary = SECOND_STAGE_NAMES[stats.PRIMARY[0]], BASELINE_NAMES[stats.PRIMARY[1]]
    st.caption("Each second stage's test accuracy against four readings of stage one, paired over the same "
               "repeats: as the protocol reports it; its best val_accuracy checkpoint; the same weights with every "
               "BatchNorm layer's statistics re-estimated on the training split; both. *Share of gain*: how much "
               "of the head's gain over the reported stage one that fix recovers alone (a dash unless that gain is "
               "significant: a share of noise can be any size). *p (Holm)*: the p-value adjusted for the "
               f"table's many tests, on every row but the one declared primary ({primary[0]} vs {primary[1]}). "
               + (f"This CNN has {count_text(layers, 'BatchNorm layer')}." if layers else
                  "This CNN has no BatchNorm layer, so the BatchNorm rows equal the others."))
    seconds = list(dict.fromkeys(table["head"]))
    first_reading = next((k for k in seconds if k in stats.READING_ROWS), None)
    for second in seconds:
        if second == first_reading:
            st.markdown("**Second stages that train no network** (fitted on the same extracted features)")
        part = table[table["head"] == second]
        name = SECOND_STAGE_NAMES[second]
        shown = pd.DataFrame({
            "stage one": [BASELINE_NAMES[b] for b in part["baseline"]],
            "stage one test": part["mean first"].map(pct).to_list(),
            f"{name} test": part["mean second"].map(pct).to_list(),
            "difference": part["mean difference"].map(signed_pct).to_list(),
            "95% CI": [f"{signed_pct(lo)} to {signed_pct(hi)}" if math.isfinite(lo) else "–"
                       for lo, hi in zip(part["ci low"], part["ci high"])],
            "p-value": part["p (t-test)"].map(p_text).to_list(),
            "p (Holm)": [holm_text(p, bool(k)) for p, k in zip(part["p (Holm)"], part["primary"])],
            "significant": [_significance(p) for p in part["p (t-test)"]],
            "share of gain": [share_text(s) for s in part["share of gain"]]})
        n = int(part["n"].iloc[0])
        st.markdown(f"**{name}** ({count_text(n, 'repeat')})")
        st.dataframe(shown, hide_index=True, placeholder="–")
        if column and second in paper.TABLE1[column]:
            theirs = paper.TABLE1[column]
            diff = theirs[second][2] - theirs["stage1"][2]
            p_part = f", p = {p_text(paper.TABLE2[column][3])}" if second == "adam" else " (no test published)"
            st.caption(f"Paper, as reported only: {pct(theirs['stage1'][2])} → {pct(theirs[second][2])}, "
                       f"{signed_pct(diff)}{p_part}.")
    with st.expander("All Table 3 columns (t statistic, Wilcoxon test, repeats)"):
        full = table.drop(columns=["comparison"]).copy()
        full["baseline"] = full["baseline"].map(BASELINE_NAMES)
        full["head"] = full["head"].map(SECOND_STAGE_NAMES)
        st.dataframe(full, hide_index=True, placeholder="–", column_config={
            c: st.column_config.NumberColumn(format="%.4f") for c in ("mean first", "mean second",
                                                                     "mean difference", "ci low", "ci high",
                                                                     "t", "share of gain")})


# ---------------------------------------------------------------------------------- Tables 1 and 2

def reading_controls(dataset: str, column_default: str | None, bn_readings: bool):
    """Which paper column to compare with, which weights to read, which training accuracy. With
    ``bn_readings`` (every record holds them), stage one can also be read with its BatchNorm statistics
    re-estimated, so Tables 1-2 and Figure 16 show the heads against the stage one Table 3 asks about."""
    from core.protocol import paper
    from core.results import stats

    columns = paper.columns_for(dataset)
    c = st.columns([3, 3, 2, 3])
    column = None
    if columns:
        column = c[0].selectbox("Paper's column", columns, format_func=lambda k: COLUMN_NAMES.get(k, k),
                                index=columns.index(column_default) if column_default in columns else 0,
                                help="Which of the paper's Table 1/2 columns to put beside ours.")
    stage1_choices = {**WEIGHT_CHOICES, **(STAGE1_BN_CHOICES if bn_readings else {})}
    s1w = stage1_choices[c[1].selectbox("Stage-one weights", list(stage1_choices), key="stage1_weights",
                                        help="protocol's = the weights the protocol reports (the paper: last "
                                             "epoch); or the last epoch / best val_accuracy checkpoint"
                                             + ("; or either with every BatchNorm layer's moving statistics "
                                                "re-estimated on the training split (Table 3's readings)."
                                                if bn_readings else "."))]
    s2w = WEIGHT_CHOICES[c[2].selectbox("Stage-two weights", list(WEIGHT_CHOICES),
                                        help="The same choice for both heads.")]
    source = c[3].radio("Training accuracy", list(stats.TRAIN_SOURCES), format_func=TRAIN_LABELS.get,
                        horizontal=True, key="train_source",
                        help="The paper does not say which one its Table 1 shows. " + " / ".join(
                            f"{TRAIN_LABELS[k]}: {v}" for k, v in stats.TRAIN_SOURCES.items()))
    return column, s1w, s2w, source


def bn_reading(s1w: str | None) -> bool:
    return s1w in STAGE1_BN_CHOICES.values()


def method_names(s1w: str | None) -> dict[str, str]:
    """The methods' names, saying so when stage one is read with its BatchNorm statistics re-estimated."""
    return {**METHOD_NAMES, "stage1": BN_STAGE1} if bn_reading(s1w) else METHOD_NAMES


def table1_section(runs, column, s1w, s2w, source, prov: str) -> None:
    import pandas as pd

    from core.protocol import paper
    from core.results import stats

    st.markdown("#### Table 1: accuracy per method (mean over repeats)")
    ours = stats.table1(runs, s1w, s2w, train_source=source)
    theirs = paper.table1(column) if column else None
    rows = []
    names = method_names(s1w)
    for (label, row), method in zip(ours.iterrows(), METHOD_NAMES):
        out = {"method": names[method]}
        for split in ("test", "train", "val"):
            mean, std = pct(row[f"{split} mean"]), row[f"{split} std"]
            out[f"{split}, ours"] = mean if not math.isfinite(std) else f"{mean} ± {pct(std)}"
            if theirs is not None:
                out[f"{split}, paper"] = pct(theirs.loc[label, f"{split} mean"])
        rows.append(out)
    st.dataframe(pd.DataFrame(rows), hide_index=True, placeholder="–",
                 column_config={"method": st.column_config.TextColumn(width="medium")})
    size_note = paper.data_size_note(runs[0]["protocol"]["dataset"], runs[0]["dataset"].get("sizes", {}))
    st.caption(f"Ours: {count_text(len(runs), 'repeat')}, mean ± standard deviation; training accuracy: "
               f"{stats.TRAIN_SOURCES[source]}. "
               + (f"Paper: {paper.REPEATS} repeats, {paper.COLUMNS[column][1]}, RTX 2080 Ti." if column else
                  "The paper has no column for this dataset.")
               + (f" {size_note}" if column and size_note else ""))
    if theirs is not None:
        with st.expander("Differences from the paper, and each method's gain over stage one"):
            base_ours, base_theirs = ours.iloc[0]["test mean"], theirs.iloc[0]["test mean"]
            diff = pd.DataFrame({
                "method": list(names.values()),
                **{f"{split}, ours − paper": [signed_pct(ours.iloc[i][f"{split} mean"]
                                                         - theirs.iloc[i][f"{split} mean"]) for i in range(3)]
                   for split in ("test", "train", "val")},
                "test gain, ours": [signed_pct(ours.iloc[i]["test mean"] - base_ours) for i in range(3)],
                "test gain, paper": [signed_pct(theirs.iloc[i]["test mean"] - base_theirs) for i in range(3)]})
            st.dataframe(diff, hide_index=True, placeholder="–")
            st.caption(prov)


def table2_section(runs, column, s1w, s2w, prov: str) -> None:
    import pandas as pd

    from core.results import stats

    st.markdown("#### Table 2: paired two-tailed t-test of test accuracy")
    ours = stats.table2(runs, s1w, s2w)
    st.caption(paper_line(column))
    if ours.empty:
        st.info("No repeats to test.")
        return
    used = list(ours["repeats used"])  # stats names the excluded repeats, as the verdict's sentence does
    head = ["Adam head" if "Adam" in c else "SGD head" for c in ours["comparison"]]
    stage1 = BN_STAGE1 if bn_reading(s1w) else "stage one"
    shown = pd.DataFrame({
        "head": head, "repeats": [f"{n} ({u})" for n, u in zip(ours["n"], used)],
        f"{stage1} test": ours["mean first"].map(pct), "head test": ours["mean second"].map(pct),
        "difference": ours["mean difference"].map(signed_pct),
        "p-value": ours["p (t-test)"].map(p_text),
        "significant": [_significance(p, a) for p, a in zip(ours["p (t-test)"], ours["alpha"])]})
    st.dataframe(shown, hide_index=True, placeholder="–")
    n = len(runs)
    if n < 2:
        st.caption("A paired test needs at least 2 repeats.")
    elif n < 6:
        st.caption(f"With {n} repeats the Wilcoxon test cannot reach p < 0.05 (its smallest two-tailed p is "
                   f"{2 / 2 ** n:.3f}); the paper used 20.")
    with st.expander("95% confidence intervals, t statistics and the Wilcoxon signed-rank test"):
        extra = pd.DataFrame({
            "head": head, "repeats used": used, "95% CI low": ours["ci low"].map(signed_pct),
            "95% CI high": ours["ci high"].map(signed_pct),
            "t": ["–" if not math.isfinite(t) else f"{t:.3f}" for t in ours["t"]],
            "p (Wilcoxon)": ours["p (Wilcoxon)"].map(p_text), "alpha": ours["alpha"]})
        st.dataframe(extra, hide_index=True, placeholder="–")
        st.caption("Outlying repeats: Tukey's fences (1.5 IQR) on stage one's test accuracy. " + prov)


def figure16_section(runs, s1w, s2w, prov: str) -> None:
    from core.results import stats
    from ui.charts import figure16

    st.markdown("#### Per-repeat test accuracy (the paper's Figure 16)")
    frame = stats.runs_frame(runs, s1w, s2w)
    axis = BN_STAGE1.replace(", ", ",<br>") if bn_reading(s1w) else "stage one"
    st.plotly_chart(figure16(frame, axis), key="fig16")
    ups = {h: int(((frame[f"{h}_test_accuracy"] - frame["stage1_test_accuracy"]) > 0).sum()) for h in HEAD_NAMES}
    st.caption(f"One line per repeat, coloured by its own comparison: green where that head beat stage one in "
               f"that repeat (Adam head {ups['adam']} of {len(frame)}, SGD head {ups['sgd']} of {len(frame)}), "
               f"red where it did worse, grey for a tie"
               f"{'; black: the means' if len(frame) > 1 else ''}. {prov}")


# ----------------------------------------------------------------------------------- the rest

def curves_section(runs) -> None:
    st.markdown("#### Learning curves of one repeat (the paper's Figure 15)")
    c = st.columns([1, 3])
    repeat = c[0].selectbox("Repeat", [r["repeat"] for r in runs], format_func=repeat_name, key="curve_repeat")
    stage = c[1].radio("Stage", list(METHOD_NAMES), horizontal=True, format_func=METHOD_NAMES.get,
                       key="curve_stage")
    run = next(r for r in runs if r["repeat"] == repeat)
    part = run[stage]
    st.plotly_chart(curves_figure(part["history"], f"{repeat_name(repeat).capitalize()}: {METHOD_NAMES[stage]}"),
                    key="fig15")
    st.caption(f"{part['epochs_run']} epochs run, best val_accuracy at epoch {part['best_epoch']} · "
               f"{run['env']['backend']} on {run['env']['device']} · {run['finished_at']}")


def option_section(exp, exps, runs) -> None:
    import pandas as pd

    from core.app import catalog
    from core.results import stats

    st.markdown("#### Effect of the protocol options")
    st.markdown("**Which weights are evaluated** (every record holds both, so this needs no retraining):")
    eff = stats.option_effects(runs)
    if not eff.empty:
        eff = eff.copy()
        for col in ("mean stage-one test", "mean stage-two test"):
            eff[col] = eff[col].map(pct)
        eff["mean gain"] = eff["mean gain"].map(signed_pct)
        eff["head"] = eff["head"].map(HEAD_NAMES)
        st.dataframe(eff, hide_index=True, placeholder="–")
    same = [e for e in exps if e.protocol.dataset == exp.protocol.dataset]
    fields = catalog.protocol_differences([e.protocol for e in same])
    if len(same) < 2 or not fields:
        st.caption("Runs of this dataset with other protocol options (e.g. augmentation, head initialisation, "
                   "ReduceLROnPlateau) will be compared here once they exist.")
        return
    rows = []
    for e in same:
        f = stats.runs_frame(e.runs)
        values = e.protocol.to_dict()
        row = {catalog.option_name(k): catalog.option_value(values[k]) for k in fields}
        row.update({"repeats": len(e.runs), "stage one test": pct(f["stage1_test_accuracy"].mean()),
                    "Adam head test": pct(f["adam_test_accuracy"].mean()),
                    "gain": signed_pct((f["adam_test_accuracy"] - f["stage1_test_accuracy"]).mean()),
                    "source": e.source})
        rows.append(row)
    st.markdown(f"**Experiments of this dataset that differ in:** {', '.join(map(catalog.option_name, fields))}")
    st.dataframe(pd.DataFrame(rows), hide_index=True, placeholder="–")


def downloads(exp, exps) -> None:
    """Each file is written when its button is clicked: made on every visit, "All runs (JSON)" alone held 12 MB
    per visitor for as long as the page stayed open (docs/reference.md, the hosted demo)."""
    from functools import partial

    from core.results.store import export_csv, export_json

    st.markdown("#### Downloads")
    c = st.columns(4)
    every = [r for e in exps for r in e.runs]
    c[0].download_button("Experiment (CSV)", partial(export_csv, exp.runs), f"runs_{exp.key}.csv", "text/csv",
                         on_click="ignore", help="One row per repeat: every accuracy, loss, epoch count and time.")
    c[1].download_button("Experiment (JSON)", partial(export_json, exp.runs), f"runs_{exp.key}.json",
                         "application/json", on_click="ignore",
                         help="The full records: histories and per-image predictions included.")
    c[2].download_button("All runs (CSV)", partial(export_csv, every), "runs_all.csv", "text/csv", on_click="ignore")
    c[3].download_button("All runs (JSON)", partial(export_json, every), "runs_all.json", "application/json",
                         on_click="ignore")


def paper_tables() -> None:
    from core.protocol import paper

    st.caption(f"Source: {paper.SOURCE}.")
    t2 = paper.table2().copy()
    for col in ("mean first-stage test", "mean second-stage test"):
        t2[col] = t2[col].map(pct)
    t2["p (two-tailed)"] = t2["p (two-tailed)"].map(p_text)
    st.dataframe(t2, hide_index=True, placeholder="–")


def body() -> None:
    from core.app import catalog
    from core.protocol.paper import paper_column
    from core.results import stats
    from ui import evidence

    st.title("Results")
    exps = experiments()
    if not exps:
        st.info("No finished runs yet: start the quick run on the Overview page or an experiment on the Train "
                "page; its Tables 1 and 2 appear here as soon as repeats finish. Meanwhile, the paper's Table 2:")
        paper_tables()
        st.page_link("app_pages/train.py", label="Go to Train", icon=":material/model_training:")
        return
    exp = choose_experiment(exps)
    runs = exp.runs
    prov = f"Ours: {catalog.dataset_form(runs[0])} · {catalog.provenance_line(runs, exp.source)}"
    st.info(prov, icon=":material/receipt_long:")
    default_column = paper_column(exp.protocol)
    verdict_section(runs, default_column)

    st.subheader("The paper's tables beside ours")
    bn_readings = all("last_bn" in r["stage1"] and "best_bn" in r["stage1"] for r in runs)
    column, s1w, s2w, source = reading_controls(exp.protocol.dataset, default_column, bn_readings)
    if s1w or s2w:
        prov += (f" · evaluated with stage-one {WEIGHT_WORDS[s1w or exp.protocol.stage1_eval]} / stage-two "
                 f"{WEIGHT_WORDS[s2w or exp.protocol.stage2_eval]} weights")
    table1_section(runs, column, s1w, s2w, source, prov)
    table2_section(runs, column, s1w, s2w, prov)
    figure16_section(runs, s1w, s2w, prov)

    st.subheader("The images behind the numbers")
    evidence.changes_section(runs, stats.bn_layers(runs))
    evidence.confusion_section(runs)

    st.subheader("More")
    curves_section(runs)
    option_section(exp, exps, runs)
    downloads(exp, exps)
    with st.expander("The paper's Table 2 (all datasets)"):
        paper_tables()


guard(body)
