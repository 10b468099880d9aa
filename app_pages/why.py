"""Why: does the second stage really help, and why? The explanation tested four ways, per dataset.

Table 3 (on Results) reads the gain apart after the fact. Here: per repeat, the gain against what
re-estimating BatchNorm lifts (PreciseBN); the intervention (the same experiment at a lower BatchNorm
momentum); the dose (training-set size); and the ceiling (second stages that train no network: cRT, DFR).
Every number comes from stored records (:mod:`core.results.why`); an experiment not run yet is named with the
command that runs it.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from core.app.catalog import best_experiment, dataset_form, experiment_id
from core.protocol.vocabulary import DATASETS, dataset_title
from core.protocol.words import count_text, repeat_name
from ui.charts import curves_figure
from ui.common import experiments, guard
from ui.experiments import results_link
from ui.format import pct, signed_pct

LITERATURE = {
    "precise": "PreciseBN (Wu & Johnson 2021; fvcore's `update_bn_stats`)",
    "bn": "PreciseBN (Wu & Johnson 2021, *Rethinking \"Batch\" in BatchNorm*; fvcore's `update_bn_stats`): "
          "re-estimating BatchNorm's statistics with the final weights",
    "ceiling": "classifier re-training on frozen features (cRT, Kang et al. 2020) and last-layer retraining on "
               "held-out data (DFR, Kirichenko et al. 2022)",
}


def command(protocol, repeats: int = 5) -> str:
    """The command line that runs ``protocol`` (its non-default options, as the options declare them)."""
    from core.protocol.config import Protocol
    from core.protocol.options import declared, to_flags

    values = {f.name: getattr(protocol, f.name) for f, _ in declared(Protocol) if f.name != "dataset"}
    return f"python -m core run --dataset {protocol.dataset} {' '.join(to_flags(values, Protocol))} --repeats {repeats}"


def pick_dataset(exps):
    """The dataset (only those with an experiment) and its headline experiment: the most repeats."""
    shown = [d for d in DATASETS if best_experiment(exps, d)]
    if not shown:
        st.info("No experiment has been run yet: the shipped results are missing and your cache is empty.")
        return None
    asked = st.query_params.get("dataset")
    dataset = st.segmented_control("Dataset", shown, format_func=dataset_title, key="why_dataset",
                                   default=asked if asked in shown else shown[0])
    dataset = dataset or shown[0]
    st.query_params["dataset"] = dataset  # the URL names what is shown (a link from the Overview opens it)
    return best_experiment(exps, dataset)


def gain_section(exp) -> None:
    from core.results import stats

    st.markdown("#### 1. The gain as reported, and Table 3's reading")
    from core.results import why

    st.markdown(f"**Verdict:** {stats.verdict(exp.runs, 'adam')}")
    copies = why.without_duplicates(exp.runs)
    if copies:
        st.caption(copies["reading"] + " A test score that counts copies of training images partly measures "
                   "memory.")
    results_link(experiment_id(exp, experiments()), "Table 3 in full, with the SGD head, on Results")


def scatter_section(exp) -> int | None:
    """Gain vs BatchNorm lift per repeat; a click selects a repeat (returned) for the charts below."""
    import altair as alt

    from core.results import why, stats

    st.markdown("#### 2. Per repeat: does the gain follow the BatchNorm lift?")
    if not stats.bn_layers(exp.runs):
        st.caption("This dataset's CNN has no BatchNorm layer: there are no statistics to re-estimate.")
        return None
    frame, found = why.lift_scatter(exp.runs)
    if frame.empty:
        st.caption("These records predate the BatchNorm re-estimation.")
        return None
    frame["repeat name"] = [repeat_name(r) for r in frame["repeat"]]
    pick = alt.selection_point(fields=["repeat"], name="pick")
    chart = alt.Chart(frame).mark_circle(size=90).encode(
        x=alt.X("bn_lift:Q", title="BatchNorm lift of stage one (pp)", axis=alt.Axis(format="+.1%")),
        y=alt.Y("gain:Q", title="Adam head's gain over stage one (pp)", axis=alt.Axis(format="+.1%")),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.35)),
        tooltip=["repeat name", alt.Tooltip("gain:Q", format="+.2%"), alt.Tooltip("bn_lift:Q", format="+.2%")],
    ).add_params(pick).properties(height=320)
    line = alt.Chart(frame).mark_line(color="#999", strokeDash=[4, 4]).encode(
        x="bn_lift:Q", y="bn_lift:Q")
    event = st.altair_chart(chart + line, on_select="rerun", selection_mode="pick", key="why_scatter",
                            width="stretch")
    st.caption(f"{found['reading']} The dashed line is gain = lift: a repeat on it gains exactly what "
               f"re-estimating BatchNorm gives stage one ({LITERATURE['bn']}). Click a repeat to follow it below.")
    picked = (event.selection.get("pick") or [{}])[0].get("repeat") if event and event.selection else None
    return int(picked) if picked is not None else None


def intervention_section(exp, exps) -> None:
    from core.results import stats, why

    st.markdown("#### 3. The interventions: lower BatchNorm momentum, no augmentation, no dropout")
    if not stats.bn_layers(exp.runs):
        st.caption("This dataset's CNN has no BatchNorm layer, so there is no momentum to intervene on.")
        return
    st.caption("Re-estimating BatchNorm replaces the moving averages kept during training by the statistics of "
               "clean training images computed with dropout off. Three things can make them differ: the averages "
               "lag behind the weights (a lower momentum shortens the lag); the training batches were augmented "
               "while the test images are not (training without augmentation removes that gap); and dropout "
               "before a BatchNorm layer changes the variance it sees in training but not at inference (the "
               "variance shift, Li et al. 2019; training without dropout removes it). Each arm below changes "
               "one, paired repeat by repeat with the paper's arm.")
    pairs = why.intervention_pairs(exps, exp.protocol.dataset)
    for control, _, found in pairs:
        st.caption(f"{dataset_form(control.runs[0])} · {control.protocol.describe()}")
        _arm_table(found)
        st.caption(found["reading"] + (" Prediction if the lag causes the gain: at the lower momentum stage one's "
                   "reported score rises to about its re-estimated value, and the gain shrinks to what Table 3's "
                   "both-fixes row leaves." if found["field"] == "bn_momentum" else ""))
    if pairs:
        st.markdown(f"**In short:** {why.interventions_summary([found for *_, found in pairs])}")
    else:
        st.caption("Not run yet for this dataset. On a CPU a subset keeps it to hours; both arms need the same "
                   "options and seeds:")
        limit = exp.protocol.limit or 2000
        st.code(f"{command(exp.protocol.with_(limit=limit))}\n"
                f"{command(exp.protocol.with_(limit=limit, bn_momentum=0.9))}\n"
                f"{command(exp.protocol.with_(limit=limit, augment=False))}\n"
                f"{command(exp.protocol.with_(limit=limit, no_dropout=True))}")


def precise_section(exp, exps) -> None:
    import pandas as pd

    from core.results import stats, why

    st.markdown("#### 4. Lag or difference? PreciseBN on the same models")
    if not stats.bn_layers(exp.runs):
        st.caption("This dataset's CNN has no BatchNorm layer, so there is no lift to split.")
        return
    st.caption(f"Re-estimation computes exact statistics of clean images. {LITERATURE['precise']} averages "
               "the statistics of training batches instead: run as fvcore runs it (the model in training mode, so "
               "augmentation and dropout on) it removes only the moving averages' lag and noise; with only "
               "BatchNorm in training mode it also sees clean images. On the same kept models, the two split "
               "re-estimation's lift in two. Test accuracy, mean over repeats.")
    frame, reading = why.precise_split(exps, exp.protocol.dataset)
    if frame.empty:
        st.caption("Not read yet for this dataset. `python -m core precise-bn NAME --cache DIR` adds the reading "
                   "to a shipped experiment from the models its cache kept (nothing is retrained).")
        return
    first, base = why.precise_source(exps, exp.protocol.dataset)
    st.caption(f"{dataset_form(first.runs[0])} · {base.describe()} · the arm and the training images as in each row")
    shown = pd.DataFrame({
        "arm": frame["arm"], "training images": frame["training images"].map("{:,}".format),
        "repeats": frame["repeats"], "stage one": frame["stage one"].map(pct),
        "PreciseBN (fvcore)": frame["PreciseBN"].map(pct),
        "BN only": frame["PreciseBN, BatchNorm only"].map(pct),
        "re-estimated": frame["re-estimated"].map(pct),
        "recovered": frame["share recovered"].map(lambda v: f"{100 * v:.0f} %" if v == v else "–")})
    st.dataframe(shown, hide_index=True)
    st.caption("PreciseBN (fvcore): augmentation and dropout on, as fvcore runs it; BN only: PreciseBN with only "
               "BatchNorm in training mode; recovered: PreciseBN (fvcore)'s share of re-estimation's lift over "
               "stage one. " + reading)


def _arm_table(found: dict) -> None:
    import pandas as pd

    rows = []
    for name, arm in zip(found["arms"], (found["control"], found["treated"])):
        rows.append({"arm": name,
                     "training images": arm["train_images"], "repeats": arm["repeats"],
                     "stage one": pct(arm["stage1"][0]), "stage one, BN re-estimated": pct(arm["stage1_bn"][0]),
                     "Adam head": pct(arm["head"][0]), "gain": signed_pct(arm["gain"][0]),
                     "gain over BN-fixed stage one": signed_pct(arm["gain_over_bn"][0])})
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def size_section(exp, exps, picked: int | None) -> None:
    import altair as alt
    import pandas as pd

    from core.results import why

    st.markdown("#### 5. The dose: more training images, more optimizer steps per epoch")
    points = why.related(exps, exp, "limit")
    if len(points) < 2:  # the headline experiment has no size curve: one run elsewhere (other data or size)
        points = next(iter(why.families(exps, exp.protocol.dataset, "limit")), points)
        if len(points) > 1:
            st.caption(f"{dataset_form(points[0].runs[0])} · {replace(points[0].protocol, limit=None).describe()}")
    frame, reading = why.size_curve([p.runs for p in points])
    if len(frame) < 2:
        st.caption("Not run yet for this dataset: the same protocol at several training-set sizes, e.g.")
        st.code("\n".join(command(exp.protocol.with_(limit=n), 3) for n in (1000, 2000, 4000)))
        return
    per_repeat = pd.DataFrame([{"training images": r["dataset"]["sizes"]["train"], "repeat": r["repeat"],
                                "gain": why._gain(r, "adam"), "repeat name": repeat_name(r["repeat"])}
                               for p in points for r in p.runs if "last_bn" in r["stage1"]])
    long = pd.concat([frame.assign(reading="over stage one as reported", mean=frame["gain"], low=frame["gain low"],
                                   high=frame["gain high"]),
                      frame.assign(reading="over stage one, BN re-estimated", mean=frame["gain over BN"],
                                   low=frame["gain over BN low"], high=frame["gain over BN high"])])
    x = alt.X("training images:Q", scale=alt.Scale(type="log"), title="training images (log scale)")
    band = alt.Chart(long).mark_errorbar().encode(x=x, y=alt.Y("low:Q", title="Adam head's gain"), y2="high:Q",
                                                  color="reading:N")
    legend = alt.Legend(orient="bottom")
    means = alt.Chart(long).mark_line(point=True).encode(x=x, y=alt.Y("mean:Q", axis=alt.Axis(format="+.1%")),
                                                         color=alt.Color("reading:N", legend=legend))
    dots = alt.Chart(per_repeat).mark_circle(size=40).encode(
        x=x, y="gain:Q", tooltip=["repeat name", alt.Tooltip("gain:Q", format="+.2%")],
        color=alt.value("#d62728") if picked is None else alt.condition(
            alt.datum.repeat == picked, alt.value("#d62728"), alt.value("#bbb")))
    st.altair_chart((band + means + dots).properties(height=320), width="stretch")
    st.caption(reading + " Bars: 95 % confidence intervals of the mean; dots: the repeats (gain over stage one "
               "as reported), the selected repeat in red.")


def ceiling_section(exp, exps) -> None:
    import pandas as pd

    from core.results import why

    st.markdown("#### 6. The ceiling: the best second stage on the same features")
    frame, reading = why.ceiling(exp.runs)
    if frame.empty or "logistic" not in set(frame["key"]):
        st.caption(reading + " Runs made from now on store them; rerun the experiment to see them:")
        st.code(command(exp.protocol, len(exp.runs)))
        read = [e for e in exps if e.protocol.dataset == exp.protocol.dataset and any(r.get("readings")
                                                                                     for r in e.runs)]
        if not read:
            return
        exp = max(read, key=lambda e: len(e.runs))  # the readings where some experiment of this dataset has them
        frame, reading = why.ceiling(exp.runs)
        st.caption(f"Meanwhile, the readings of another experiment on this dataset: {dataset_form(exp.runs[0])} · "
                   f"{count_text(len(exp.runs), 'repeat')} · {exp.protocol.describe()}")
    shown = pd.DataFrame({"second stage": frame["second stage"], "repeats": frame["repeats"],
                          "test accuracy": frame["test mean"].map(pct),
                          "95% CI": [f"{pct(lo)} to {pct(hi)}" for lo, hi in zip(frame["ci low"], frame["ci high"])]})
    st.dataframe(shown, hide_index=True)
    st.caption(f"{reading} The readings are {LITERATURE['ceiling']}.")
    sizes = why.sample_sizes(exp.runs)
    if len(sizes) > 1:
        text = ", ".join(f"{pct(m)} with {n:,} images" for n, m in zip(sizes["images"], sizes["test mean"]))
        st.caption(f"Stage one after re-estimating BatchNorm on fewer training images: {text}.")


def repeat_curves(exp, picked: int | None) -> None:
    if picked is None:
        return
    run = next((r for r in exp.runs if r["repeat"] == picked), None)
    if run is not None:
        st.markdown(f"**{repeat_name(picked).capitalize()}: stage one's learning curves**")
        st.plotly_chart(curves_figure(run["stage1"]["history"]), key="why_curves")


def main() -> None:
    st.title("Why does the second stage help?")
    st.caption("The paper's second stage retrains only the softmax on stage one's features. Table 3 showed that "
               "where the CNN has BatchNorm, re-estimating its statistics explains much of the gain. Here that "
               "explanation is tested: per repeat, by intervening on the cause, by splitting the lift on the same "
               "models (PreciseBN), by the amount of data, and against the best possible head on the same "
               "features.")
    exps = experiments()
    exp = pick_dataset(exps)
    if exp is None:
        return
    st.caption(f"{dataset_form(exp.runs[0])} · {count_text(len(exp.runs), 'repeat')} · "
               f"{exp.runs[0]['dataset'].get('sizes', {}).get('train', '?'):,} training images per repeat · "
               f"{exp.protocol.describe()}")
    gain_section(exp)
    picked = scatter_section(exp)
    repeat_curves(exp, picked)
    intervention_section(exp, exps)
    precise_section(exp, exps)
    size_section(exp, exps, picked)
    ceiling_section(exp, exps)


guard(main)
