"""Related reports: the four reports' claims (their numbers, labelled), their models, their experiment (queued from
here or run from the CLI), and our runs beside theirs, with the paper's second stage applied to each model."""

from __future__ import annotations

import math

import streamlit as st

from core.app.catalog import REFERENCE, SHORT_SOURCE, dataset_form
from core.app.preview import missing_data
from core.protocol.vocabulary import DATASETS, HEAD_NAMES, METHODS, STAGE_ONE, dataset_title
from core.protocol.words import count_text, repeat_name
from ui.common import data_folder_box, experiments, guard, limits, report_experiments
from ui.format import docstring_markdown, pct, signed_pct
from ui.jobs import submit

REPORT_PARAM = "report"
SWEPT = ("learning_rate", "epochs", "batch_size", "augment_preset", "architecture")


@st.cache_data(show_spinner="Building the models to count their parameters…", max_entries=32)
def counts(architecture: str) -> dict[str, int]:
    from core.models.counts import source_parameter_counts

    return source_parameter_counts(architecture)


def choose_report():
    from core.studies import reports

    ids = list(reports.REPORTS)
    wanted = st.query_params.get(REPORT_PARAM)
    if wanted in ids and "reports_id" not in st.session_state:
        st.session_state["reports_id"] = wanted
    chosen = st.radio("Report", ids, key="reports_id", horizontal=True,
                      format_func=lambda i: f"{i}: {reports.REPORTS[i].title}")
    st.query_params[REPORT_PARAM] = chosen
    return reports.REPORTS[chosen]


def claims_section(report) -> None:
    st.markdown(f"**What it claims.** {report.claims}")
    st.caption(f"Their data: {report.data_used}. Here: {report.data_here}.")
    for table in report.published:
        frame = table.frame()
        st.markdown(f"**{table.title}** (published by report {report.id}, not ours)")
        counts = {c: st.column_config.NumberColumn(format="localized") for c in frame.columns
                  if frame[c].dtype.kind == "i"}  # 13,305,315 parameters, not 13305315
        st.dataframe(frame, hide_index=True, placeholder="–", height="content",  # its "average" row shows
                     column_config=counts)
        if table.note:
            st.caption(table.note)
    if report.deviations:
        with st.expander("Where the report is silent or differs from our pipeline (our readings)"):
            for line in report.deviations:
                st.markdown(f"- {line}")


def models_section(report) -> None:
    import pandas as pd

    from core.protocol.arch_spec import KINDS, info
    from core.models.models import REGISTRY

    rows = [{"id": a, "model": info(a).title, "kind": info(a).kind,
             "input": "×".join(map(str, info(a).input_shape)) + (" → 224" if info(a).frozen else ""),
             "published parameters": f"{n:,}" if n else "–"} for a, n in report.models.items()]
    if limits().demo:
        st.caption("Our counts: run `python -m core architectures` (building the ImageNet backbones takes more "
                   "memory than the public demo allows).")
    elif st.toggle("Build the models and count their parameters", key=f"count_{report.id}",
                   help="Builds each model at the report's input (ImageNet backbones take a few seconds each)."):
        for row in rows:
            c = counts(row["id"])
            row["our parameters"] = f"{c['total']:,}"
            row["trainable"] = f"{c['trainable']:,}"
    st.dataframe(pd.DataFrame(rows), hide_index=True, placeholder="–")
    st.caption(" · ".join(f"{k}: {v}" for k, v in KINDS.items()) + ". Stage two cuts every model at the layer "
               "before its final softmax.")
    choice = st.selectbox("What the builder says (layers, the report's numbers, our choices)", list(report.models),
                          key=f"doc_{report.id}")
    docs = [REGISTRY[choice].__doc__ or ""]
    if info(choice).frozen:
        from core.models import backbones

        docs.append(backbones.__doc__ or "")
    with st.container(border=True):
        st.markdown("\n\n".join(docstring_markdown(doc) for doc in docs))


def run_section(report) -> None:
    from core.studies import reports

    lim = limits()
    c = st.columns([1, 2, 2])
    size = c[0].radio("Size", reports.SIZES, horizontal=True, key=f"size_{report.id}",
                      help="small: cut down to minutes on a CPU; full: the report's own recipe")
    dataset = c[1].selectbox("Dataset", DATASETS, index=DATASETS.index(report.dataset), key=f"ds_{report.id}",
                             format_func=dataset_title)
    path = data_folder_box(dataset, c[2])
    weights = None
    if any(a.startswith(("002", "004-resnet", "004-vgg")) for a in report.models):
        weights = st.text_input("Backbone weights (reports 002/004)", key=f"w_{report.id}",
                                placeholder="empty: the plan's; 'imagenet' or a file path",
                                help="ImageNet weights cannot be downloaded without a network; a local file "
                                     "works anywhere.").strip() or None
    note = report.small_note if size == "small" else "the report's own recipe (long: hours on a CPU)"
    st.markdown(f"**The experiment** on {dataset_title(dataset)} ({size}: {note}). One command runs every step "
                "and prints ours beside theirs:")
    st.code(report.command(size, path) + (f" --dataset {dataset}" if dataset != report.dataset else "")
            + (f" --weights {weights}" if weights else ""), language="bash")
    plan = reports.plan(report, size, dataset, path, weights)
    for planned in plan:
        step = planned.step
        what = f"sweep of {step.sweep.param} over {', '.join(map(str, step.sweep.values))}" if step.sweep else "one run"
        st.markdown(f"- **{step.title}**: {what}, {count_text(step.repeats, 'repeat')} each")
        st.code(step.command(dataset, path), language="bash")
    problems = [f"{p.step.title}: {p.problem}" for p in plan if p.problem]
    if lim.demo:
        st.info("Demo mode: these experiments are not queued on the public server; run the command locally.")
        return
    if problems:
        st.warning("This dataset does not fit the plan: " + "; ".join(problems))
        return
    missing = next((m for m in (missing_data(p.protocol) for p in plan) if m), None)
    if missing:  # refused here, before queueing jobs that could only fail
        st.warning(f"Not ready to queue: {missing}", icon=":material/folder_off:")
    if st.button(f"Queue report {report.id}'s {size} experiment", type="primary", key=f"queue_{report.id}",
                 disabled=bool(missing)):
        queue_plan(plan)


def queue_plan(plan) -> None:
    for planned in plan:
        step = planned.step
        job_id, message = submit(planned.protocol, planned.repeats, sweep=step.sweep)
        if job_id:
            st.success(f"{step.title}: job {job_id} queued.")
        if message:
            st.warning(f"{step.title}: {message}")
    st.page_link("app_pages/train.py", label="Watch the jobs on the Train page", icon=":material/model_training:")


def results_section(report) -> None:
    from core.studies import reports

    mine = reports.experiments_of(report, report_experiments(report.id) + experiments())
    if not mine:
        st.info(f"No runs of report {report.id}'s models yet. Queue the experiment above, or run "
                f"`{report.command()}`; results appear here as repeats finish.")
        return
    shipped = sum(e.source == REFERENCE for e in mine)
    if shipped:
        st.caption(f"{count_text(shipped, 'experiment')} of the small plan ship with the app (`reference/reports/"
                   f"{report.id}/`, {_where(mine)}); your own runs of these models are listed after them.")
    two_stage_section(mine)
    sweeps_section(report, mine)
    experiment_section(report, mine)


def two_stage_section(mine) -> None:
    import pandas as pd

    from core.studies import reports

    st.markdown("#### Does a two-stage head help these models too?")
    rows = reports.two_stage_rows(mine)
    shown = pd.DataFrame({
        "model": rows["model"], "repeats": rows["repeats"], "stage one": rows["stage one"].map(pct),
        "Adam head": rows["Adam head"].map(pct), "gain": rows["Adam gain"].map(signed_pct),
        "p (Adam)": rows["p (Adam)"].map(_p), "SGD head": rows["SGD head"].map(pct),
        "gain ": rows["SGD gain"].map(signed_pct), "p (SGD)": rows["p (SGD)"].map(_p),
        "stage one, BN re-estimated": rows["stage one, BatchNorm re-estimated"].map(pct),
        "protocol": rows["protocol"]})
    st.dataframe(shown, hide_index=True, placeholder="–")
    st.caption("Test accuracy, mean over each experiment's repeats; stage one is the report's model as the "
               "protocol reports it (last epoch by default), the heads are the paper's brand-new softmax models on "
               "its last hidden layer. p: paired two-tailed t-test over repeats (needs two or more). *BN "
               "re-estimated*: stage one's same weights with every BatchNorm layer's statistics recomputed on the "
               "training split (the Results page's Table 3 explanation of the gain; – without BatchNorm). The "
               "reports themselves never tried a second stage: these numbers are ours only.")


def _where(exps) -> str:
    """Where the shipped experiments ran and on which data, in a few words."""
    runs = [e.runs[0] for e in exps if e.source == REFERENCE]
    devices = sorted({r["env"].get("device", "?") for r in runs})
    forms = sorted({dataset_form(r) for r in runs})
    return f"run on {', '.join(devices)}, {', '.join(forms)}"


def _p(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.3g}"


def sweeps_section(report, mine) -> None:
    from core.studies import reports
    from core.studies import sweeps
    from ui.reports_widgets import sweep_figure

    shown = False
    for param in SWEPT:
        for label, points in sweeps.collect(mine, param).items():
            if not shown:
                st.markdown("#### Sweeps: accuracy against the swept value")
                shown = True
            arch = points[0].protocol.model_id
            published = reports.published_sweep(report, arch, param)
            title = f"{param} · {'models' if param == 'architecture' else arch} on {points[0].protocol.dataset}"
            st.plotly_chart(sweep_figure(sweeps.frame(points), param, published, report.id, title=title),
                            key=f"sweep_{param}_{label}")
            st.caption(label)
            st.dataframe(sweeps.table(points, param), hide_index=True, height="content")
            if published:
                st.caption(f"Red crosses: report {report.id}'s published numbers for "
                           f"{'these models' if param == 'architecture' else arch} (its data and weights; not ours).")
    if not shown:
        st.caption("Sweeps appear here once two or more runs differ only in one swept value (learning rate, "
                   "epochs, batch size, augmentation preset or model).")


def experiment_section(report, mine) -> None:
    import pandas as pd

    from core.results import metrics
    from core.studies import reports
    from core.results import stats
    from ui.reports_widgets import METHOD_NAMES, confusion_figure

    st.markdown("#### One experiment in detail")
    labels = [f"{e.protocol.model_id} · {count_text(len(e.runs), 'repeat')} · {SHORT_SOURCE.get(e.source, e.source)}"
              f" · {e.protocol.describe()}" for e in mine]
    index = st.selectbox("Experiment", range(len(mine)), format_func=lambda i: labels[i][:160],
                         key=f"exp_{report.id}")
    exp = mine[index]
    table = stats.table1(exp.runs)
    st.dataframe(pd.DataFrame({"method": list(METHOD_NAMES.values()), "test": table["test mean"].map(pct),
                               "validation": table["val mean"].map(pct), "train": table["train mean"].map(pct)}),
                 hide_index=True, placeholder="–")
    st.markdown(f"**Verdict (Adam head):** {stats.verdict(exp.runs)}")
    theirs = reports.published_for(report, exp.protocol.model_id)
    if theirs:
        st.caption(f"Report {report.id} (its data, its protocol; not ours): " + "; ".join(
            f"{label} {pct(v) if isinstance(v, float) else '–'}" for label, v in theirs))
    names = exp.runs[0]["dataset"]["class_names"]
    method = st.radio("Per-class metrics of", METHODS, horizontal=True, key=f"m_{report.id}",
                      format_func={"stage1": STAGE_ONE, **HEAD_NAMES}.get)
    matrix, n = metrics.experiment_confusion(exp.runs, method)
    if matrix is None:
        st.info("These records hold no per-image predictions.")
    else:
        c = st.columns([3, 2])
        frame = metrics.per_class(matrix, names, n)
        c[0].dataframe(frame.style.format({"precision": "{:.3f}", "recall": "{:.3f}", "F1": "{:.3f}"}),
                       height="content")  # the macro average is the last row
        c[0].caption(f"Test set, {count_text(n, 'repeat')} pooled; support: test images of the class in one "
                     "repeat; macro average = plain mean over classes (report 002's equations).")
        c[1].plotly_chart(confusion_figure(matrix, names, "confusion matrix"), key=f"cm_{report.id}_{index}")
    made = exp.runs[0].get("training_data") or {}
    if made.get("synthetic", {}).get("preview_png"):
        import base64

        synthetic = made["synthetic"]
        st.image(base64.b64decode(synthetic["preview_png"]),
                 caption=f"DCGAN samples, one row per class ({', '.join(names)}); {synthetic['per_class']} per class "
                         f"were added to the training set ({repeat_name(exp.runs[0]['repeat'])}, "
                         f"{synthetic['gan']['epochs']} GAN epochs).")
    if made.get("backbone"):
        b = made["backbone"]
        st.caption(f"Frozen {b['architecture']} ({b['weights']}), {b['dim']} features per image, resized to "
                   f"{b['input_size']}; features read from the cache: {b['cached']}.")


def body() -> None:
    from core.studies import reports

    st.title("The four related reports")
    st.write("Four student reports built image classifiers of their own. Here each one's models are rebuilt, its "
             "experiment can be run (sweeps, repeats, per-class metrics), its published numbers stand beside ours, "
             "and every model also goes through the paper's second stage: does a two-stage head help it too?")
    report = choose_report()
    st.subheader(report.label)
    st.caption(f"Task: {report.task}.")
    tabs = st.tabs(["What it claims", "Its models", "Run its experiment", "Our results"])
    with tabs[0]:
        claims_section(report)
    with tabs[1]:
        models_section(report)
    with tabs[2]:
        run_section(report)
    with tabs[3]:
        results_section(report)
    st.caption(f"Published numbers: {reports.get(report.id).label}. Every other number comes from a stored run.")


guard(body)
