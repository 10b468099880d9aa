"""Results: the paper's Tables 1 and 2 beside ours, per-repeat pairs (Figure 16), tests, option effects, downloads."""

from __future__ import annotations

import streamlit as st

from ui.common import curves_figure, experiments, guard, pct, signed_pct

METHOD_KEYS = {"stage1": "CNN (Adam)", "adam": "CNN + second stage (Adam)", "sgd": "CNN + second stage (SGD)"}
WEIGHT_CHOICES = {"as the protocol says": None, "last epoch": "last", "best val_accuracy checkpoint": "best"}


def fmt_table1(frame):
    """Percentages for display, ``mean ± std`` when the standard deviation is there; keeps the repeats column."""
    import pandas as pd

    out = pd.DataFrame(index=frame.index)
    out["repeats"] = frame["repeats"]
    for split in ("train", "val", "test"):
        mean = frame[f"{split} mean"].map(pct)
        if f"{split} std" in frame:
            std = frame[f"{split} std"].map(lambda v: pct(v))
            mean = [m if s == "–" else f"{m} ± {s}" for m, s in zip(mean, std)]
        out[split] = list(mean)
    return out


def paper_tables() -> None:
    from core import paper

    st.caption(f"Source: {paper.SOURCE}.")
    t2 = paper.table2().copy()
    for col in ("mean first-stage test", "mean second-stage test"):
        t2[col] = t2[col].map(pct)
    st.dataframe(t2, hide_index=True)


def table1_section(exp, runs, column, s1w, s2w, prov: str) -> None:
    import pandas as pd

    from core import paper, stats

    ours = stats.table1(runs, s1w, s2w)
    st.markdown("#### Table 1: accuracy per method (mean over repeats)")
    left, right = st.columns(2)
    with left:
        st.markdown(f"**Paper** — {column or 'no paper column for this dataset'}")
        if column:
            st.dataframe(fmt_table1(paper.table1(column)))
            st.caption(f"{paper.REPEATS} repeats · {paper.COLUMNS[column][1]} · RTX 2080 Ti (paper)")
    with right:
        st.markdown("**Ours**")
        st.dataframe(fmt_table1(ours))
        st.caption(prov)
    if column:
        theirs = paper.table1(column)
        diff = pd.DataFrame({f"{split} (ours − paper)": [signed_pct(ours.loc[m, f"{split} mean"]
                                                                     - theirs.loc[m, f"{split} mean"])
                                                          for m in ours.index]
                             for split in ("train", "val", "test")}, index=ours.index)
        gain = {m: ours.loc[m, "test mean"] - ours.loc[METHOD_KEYS["stage1"], "test mean"] for m in ours.index}
        pgain = {m: theirs.loc[m, "test mean"] - theirs.loc[METHOD_KEYS["stage1"], "test mean"]
                 for m in theirs.index}
        diff["test gain over CNN, ours"] = [signed_pct(gain[m]) for m in ours.index]
        diff["test gain over CNN, paper"] = [signed_pct(pgain[m]) for m in ours.index]
        st.markdown("**Differences**")
        st.dataframe(diff)


def table2_section(runs, column, s1w, s2w, prov: str) -> None:
    from core import paper, stats

    st.markdown("#### Table 2: paired two-tailed t-test of test accuracy (stage one vs stage two)")
    ours = stats.table2(runs, s1w, s2w)
    if column:
        a, b, alpha, p = paper.TABLE2[column]
        st.markdown(f"**Paper** ({column}, 20 repeats, Adam head): first stage {pct(a)}, second stage {pct(b)}, "
                    f"difference {signed_pct(b - a)}, p = {p:.6f} at α = {alpha}"
                    + (" — significant." if p < alpha else " — not significant."))
    if ours.empty:
        st.info("No repeats to test.")
        return
    shown = ours.copy()
    for col in ("mean first", "mean second"):
        shown[col] = shown[col].map(pct)
    for col in ("mean difference", "ci low", "ci high"):
        shown[col] = shown[col].map(signed_pct)
    shown = shown.rename(columns={"ci low": "95% CI low", "ci high": "95% CI high"})
    st.markdown("**Ours**: t-test, 95% confidence interval of the mean difference, Wilcoxon signed-rank test, "
                "and the same without outlying repeats (Tukey's fences on stage-one test accuracy, when any)")
    st.dataframe(shown, hide_index=True, column_config={
        "p (t-test)": st.column_config.NumberColumn(format="%.6f"),
        "p (Wilcoxon)": st.column_config.NumberColumn(format="%.6f"),
        "t": st.column_config.NumberColumn(format="%.3f")})
    n = len(runs)
    if n < 2:
        st.caption("A paired test needs at least 2 repeats.")
    elif n < 6:
        st.caption(f"With {n} repeats the Wilcoxon test cannot reach p < 0.05 (its smallest two-tailed p is "
                   f"{2 / 2 ** n:.3f}); the paper used 20.")
    st.caption(prov)


def figure16(runs, s1w, s2w, prov: str):
    import pandas as pd
    import plotly.graph_objects as go

    from core import stats

    frame = stats.runs_frame(runs, s1w, s2w)
    fig = go.Figure()
    xs = [METHOD_KEYS[m] for m in ("stage1", "adam", "sgd")]
    for _, row in frame.iterrows():
        ys = [row[f"{m}_test_accuracy"] for m in ("stage1", "adam", "sgd")]
        gain = ys[1] - ys[0]
        fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=f"repeat {row['repeat']}",
                        line=dict(color="#2ca02c" if gain > 0 else ("#d62728" if gain < 0 else "#7f7f7f"),
                                  width=1.5),
                        hovertemplate="repeat " + str(row["repeat"]) + "<br>%{x}: %{y:.4f}<extra></extra>")
    means = [frame[f"{m}_test_accuracy"].mean() for m in ("stage1", "adam", "sgd")]
    fig.add_scatter(x=xs, y=means, mode="lines+markers", name="mean", line=dict(color="black", width=4))
    fig.update_layout(height=420, yaxis_title="test accuracy", yaxis_tickformat=".1%",
                      title="Test accuracy per repeat: stage one vs stage two (the paper's Figure 16)",
                      margin=dict(l=10, r=10, t=50, b=10), showlegend=len(frame) <= 20)
    st.plotly_chart(fig, key="fig16")
    up = int(((frame["adam_test_accuracy"] - frame["stage1_test_accuracy"]) > 0).sum())
    st.caption(f"Green: the Adam head beat the CNN in that repeat ({up} of {len(frame)}); red: it did worse. "
               + prov)
    return pd.DataFrame(frame)


def option_section(exp, exps, runs) -> None:
    import pandas as pd

    from core import preview, stats

    st.markdown("#### Effect of the protocol options")
    st.markdown("**Which weights are evaluated** (every record holds both, so this needs no retraining):")
    eff = stats.option_effects(runs)
    if not eff.empty:
        eff = eff.copy()
        for col in ("mean stage-one test", "mean stage-two test"):
            eff[col] = eff[col].map(pct)
        eff["mean gain"] = eff["mean gain"].map(signed_pct)
        st.dataframe(eff, hide_index=True)
    same = [e for e in exps if e.protocol.dataset == exp.protocol.dataset]
    fields = preview.protocol_differences([e.protocol for e in same])
    if len(same) < 2 or not fields:
        st.caption("Runs of this dataset with other protocol options (e.g. augmentation, head initialisation, "
                   "ReduceLROnPlateau) will be compared here once they exist.")
        return
    rows = []
    for e in same:
        f = stats.runs_frame(e.runs)
        row = {k: str(e.protocol.to_dict()[k]) for k in fields}
        row.update({"repeats": len(e.runs), "CNN test": pct(f["stage1_test_accuracy"].mean()),
                    "Adam head test": pct(f["adam_test_accuracy"].mean()),
                    "gain": signed_pct((f["adam_test_accuracy"] - f["stage1_test_accuracy"]).mean()),
                    "source": e.source})
        rows.append(row)
    st.markdown(f"**Experiments of this dataset that differ in:** {', '.join(fields)}")
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def downloads(exp, exps) -> None:
    from core.store import export_csv, export_json

    st.markdown("#### Downloads")
    c = st.columns(4)
    c[0].download_button("This experiment (CSV)", export_csv(exp.runs), f"runs_{exp.key}.csv", "text/csv")
    c[1].download_button("This experiment (JSON, with histories)", export_json(exp.runs), f"runs_{exp.key}.json",
                         "application/json")
    every = [r for e in exps for r in e.runs]
    c[2].download_button("All runs (CSV)", export_csv(every), "runs_all.csv", "text/csv")
    c[3].download_button("All runs (JSON)", export_json(every), "runs_all.json", "application/json")


def body() -> None:
    from core import paper, preview

    st.title("Results")
    exps = experiments()
    if not exps:
        st.info("No finished runs yet: start the quick run on the Overview page or an experiment on the Train "
                "page; its Tables 1 and 2 appear here as soon as repeats finish. Meanwhile, the paper's Table 2:")
        paper_tables()
        st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
        return

    c = st.columns([1, 3])
    datasets = sorted({e.protocol.dataset for e in exps}, key=lambda d: list(preview.DATASET_TITLES).index(d))
    dataset = c[0].selectbox("Dataset", datasets, format_func=preview.DATASET_TITLES.get)
    mine = [e for e in exps if e.protocol.dataset == dataset]
    best = preview.best_experiment(exps, dataset)
    idx = mine.index(best) if best in mine else 0
    pick = c[1].selectbox("Experiment", list(range(len(mine))), index=idx, format_func=lambda i: mine[i].label)
    exp = mine[pick]
    runs = exp.runs

    c = st.columns([1, 1, 2])
    columns = paper.columns_for(dataset)
    default_col = preview.paper_column(exp.protocol)
    column = c[0].selectbox("Compare with the paper's column", columns,
                            index=columns.index(default_col) if default_col in columns else 0) if columns else None
    s1w = WEIGHT_CHOICES[c[1].selectbox("Stage-one weights", list(WEIGHT_CHOICES))]
    s2w = WEIGHT_CHOICES[c[2].selectbox("Stage-two weights", list(WEIGHT_CHOICES))]
    prov = "Ours: " + preview.provenance_line(runs, exp.source)
    if s1w or s2w:
        prov += f" · evaluated with stage-one {s1w or exp.protocol.stage1_eval} / stage-two " \
                f"{s2w or exp.protocol.stage2_eval} weights"
    st.info(prov, icon=":material/receipt_long:")

    table1_section(exp, runs, column, s1w, s2w, prov)
    table2_section(runs, column, s1w, s2w, prov)
    st.markdown("#### Per-repeat test accuracy")
    figure16(runs, s1w, s2w, prov)

    st.markdown("#### Learning curves of one repeat (the paper's Figure 15)")
    c = st.columns([1, 2])
    repeat = c[0].selectbox("Repeat", [r["repeat"] for r in runs])
    stage = c[1].radio("Stage", ("stage1", "adam", "sgd"), horizontal=True,
                       format_func={"stage1": "stage one (CNN)", "adam": "stage two, Adam",
                                    "sgd": "stage two, SGD"}.get)
    run = next(r for r in runs if r["repeat"] == repeat)
    st.plotly_chart(curves_figure(run[stage]["history"], f"Repeat {repeat}: {stage}"), key="fig15")
    st.caption(f"{run[stage]['epochs_run']} epochs run, best val_accuracy at epoch {run[stage]['best_epoch']} · "
               f"{run['describe']} · {run['env']['backend']} on {run['env']['device']} · {run['finished_at']}")

    option_section(exp, exps, runs)
    downloads(exp, exps)
    with st.expander("The paper's Table 2 (all datasets)"):
        paper_tables()


guard(body)
