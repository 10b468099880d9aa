"""Overview: the claim, the method as a diagram, where each dataset stands, and a one-click quick run."""

from __future__ import annotations

import streamlit as st

from core.protocol.vocabulary import dataset_title, is_keras_dataset
from core.app.catalog import experiment_id
from core.jobs.progress import job_progress
from core.protocol.words import count_text
from ui.common import data_path, experiments, guard, limits
from ui.experiments import results_link
from ui.format import p_text, pct, signed_pct
from ui.jobs import job_queue, run_estimate, submit

QUICK = {"dataset": "fashion-mnist", "limit": 3000, "test_limit": 1000, "epochs": 12}
QUICK_REPEATS = 2


def quick_protocol():
    from core.protocol.config import Protocol

    lim = limits()
    values = dict(QUICK)
    if lim.max_train_images:
        values["limit"] = min(values["limit"], lim.max_train_images)
    if lim.max_test_images:
        values["test_limit"] = min(values["test_limit"], lim.max_test_images)
    values["epochs"] = min(values["epochs"], lim.max_epochs)
    return Protocol(**values), min(QUICK_REPEATS, lim.max_repeats)


# The paper's columns, one row each (Face Mask v2 without its outlier is a second reading of v2: see Results).
# A comment, not a docstring: Streamlit's "magic" would print a bare string in a page script.
STANDING_COLUMNS = ("Fashion-MNIST", "Cifar-10", "Dogs & Cats", "Face Mask Detection v1", "Face Mask Detection v2")


def standings():
    """One entry per paper column: the paper's Table 2 numbers and data size; ours from the matching
    experiment with the most repeats (its data's form and size), and Table 3's verdict on it
    (:func:`core.results.stats.verdict`, Adam head). Returns the short table and the per-dataset details."""
    import pandas as pd

    from core.app import catalog, preview
    from core.protocol import paper
    from core.results import stats

    exps = experiments()
    rows, details = [], []
    for column in STANDING_COLUMNS:
        dataset = paper.COLUMNS[column][0]
        title = dataset_title(dataset) + (column.removeprefix("Face Mask Detection")
                                          if dataset == "face-mask" else "")
        if is_keras_dataset(dataset):
            here = "yes" if preview.local_source(dataset) else "not found (see Datasets)"
        else:
            here = "folder chosen" if data_path(dataset) else "point at a folder on Datasets"
        matching = [e for e in exps if paper.paper_column(e.protocol) == column]
        exp = catalog.best_experiment(matching, dataset)
        a, b, alpha, p = paper.TABLE2[column]
        pool, test = paper.DATA_SIZES.get(dataset, (None, None))
        row = {"dataset": title,
               "paper (20 repeats)": f"{pct(a)} → {pct(b)}, {signed_pct(b - a)}, p = {p_text(p)}",
               "paper's data": f"{pool:,} + {test:,}" if pool else "–"}
        if exp:
            s1 = sum(r["stage1"][exp.protocol.stage1_eval]["test_accuracy"] for r in exp.runs) / len(exp.runs)
            s2 = sum(r["adam"][exp.protocol.stage2_eval]["test_accuracy"] for r in exp.runs) / len(exp.runs)
            sizes = exp.runs[0]["dataset"].get("sizes", {})
            row["ours"] = f"{pct(s1)} → {pct(s2)}, {signed_pct(s2 - s1)}, {count_text(len(exp.runs), 'repeat')}"
            row["our data"] = (f"{sizes.get('train', 0) + sizes.get('val', 0):,} + {sizes.get('test', 0):,}"
                               if sizes else "–")
            complete = [r for r in exp.runs if "last_bn" in r["stage1"]]
            verdict = (stats.verdict(complete, "adam") if complete else
                       "Records predate the BatchNorm evaluations: no Table 3 yet.")
            if complete and len(complete) < len(exp.runs):
                verdict += (f" (Table 3 covers the {len(complete)} of {len(exp.runs)} repeats whose records hold the "
                            "BatchNorm evaluations.)")
            row["verdict (ours)"] = short_verdict(verdict)
            size_note = paper.data_size_note(dataset, sizes)
            details.append({"title": title, "dataset": dataset, "verdict": verdict, "id": experiment_id(exp, exps),
                            "provenance": f"{catalog.dataset_form(exp.runs[0])} · "
                                          + catalog.provenance_line(exp.runs, exp.source)
                                          + (f". {size_note}" if size_note else "")})
        else:
            row.update({"ours": "not run yet", "our data": "–", "verdict (ours)": "–"})
        row["data here"] = here
        rows.append(row)
    return pd.DataFrame(rows).set_index("dataset"), details


def short_verdict(verdict: str) -> str:
    """The verdict's first sentence without its numbers ("reproduced", "not significant with 20 repeats"):
    what fits a table cell on a phone; the whole verdict is below the table."""
    first = verdict.split(": ", 1)[0]
    return first.removeprefix("The second stage's (Adam head) gain ").removeprefix("is ")


def quick_run() -> None:
    from core.app import preview

    st.subheader("Quick run: the whole loop on a small subset")
    protocol, repeats = quick_protocol()
    st.write(f"Trains **{repeats} repeats** of the two-stage method on a small Fashion-MNIST subset "
             f"(**{protocol.limit:,}** training images, **{protocol.test_limit:,}** test images, "
             f"**{protocol.epochs}** epochs), then shows Tables 1 and 2 on the Results page. "
             "It uses the same job queue as the Train page.")
    st.caption(f"Protocol: {protocol.describe()}. A subset this small gives a fresh softmax head few optimizer "
               "steps per epoch, so the quick run shows the whole loop, not the paper's effect size.")
    st.caption(run_estimate(protocol, repeats))
    if not preview.local_source("fashion-mnist"):
        st.warning("Fashion-MNIST is not installed here, so the quick run cannot start. "
                   "See the Datasets page for how to get it.")
        return
    queue, why = job_queue()
    if queue is None:
        st.info(f"{why} Training from the app needs it; the command line works without it: "
                f"`python -m core run --dataset fashion-mnist --limit {protocol.limit} "
                f"--test-limit {protocol.test_limit} --epochs {protocol.epochs} --repeats {repeats}`")
        return
    if st.button("Start the quick run", icon=":material/play_arrow:", type="primary"):
        job_id, problem = submit(protocol, repeats)
        if job_id:
            st.session_state["quick_job"] = job_id
        if problem:
            st.warning(problem)
    job_id = st.session_state.get("quick_job")
    if job_id:
        quick_status(job_id)
    else:
        c1, c2 = st.columns(2)
        c1.page_link("app_pages/train.py", label="Watch it train (live curves)", icon=":material/model_training:")
        c2.page_link("app_pages/results.py", label="See the results", icon=":material/table_chart:")


@st.fragment(run_every=2)
def quick_status(job_id: str) -> None:
    """The quick run's progress, then links: "See the results" opens the experiment this job trains."""
    try:
        queue, _ = job_queue()
        job = queue.job(job_id) if queue else None
        if job is None:
            st.caption("The quick-run job is no longer in the queue.")
            return
        frac, text = job_progress(job)
        st.progress(frac, text=f"Quick run: {text}")
        if job.get("state") == "failed":
            st.error(f"The quick run failed: {job.get('error') or 'unknown error'}")
        c1, c2 = st.columns(2)
        c1.page_link("app_pages/train.py", label="Watch it train (live curves)", icon=":material/model_training:")
        stored = (job.get("progress") or {}).get("repeats_done", 0)
        if stored:
            with c2:
                results_link(job["key"], "See the results" if job.get("state") == "done" else
                             "See the results so far")
        else:
            c2.caption("The results link appears when the first repeat is stored.")
    except Exception as exc:  # noqa: BLE001
        st.caption(f"Could not read the job's status ({type(exc).__name__}).")


def body() -> None:
    from core.app import preview

    st.title("Image classification by CNN with two-stage training")
    st.markdown(
        "**The claim.** Train a CNN as usual, then freeze it, cut it at its last hidden layer and train a "
        "*brand-new* softmax layer on those features (once with Adam, once with SGD + momentum): the "
        "two-stage model beats the CNN on test accuracy. The gain is large where stage-one training is unstable "
        "(Dogs & Cats, Face Mask) and small but significant on Fashion-MNIST and CIFAR-10 (paired t-test, "
        "20 repeats).")
    st.graphviz_chart(preview.METHOD_DOT)

    st.subheader("Where each dataset stands")
    st.caption("Paper: means of 20 repeats (Zhou, Tables 1–2; two-stage = Adam head). Ours: mean of the "
               "experiment with the most repeats for that dataset (\"not run\" until you train one), and Table 3's "
               "verdict on it: is the gain significant, and how much of it re-estimating BatchNorm statistics or "
               "the best checkpoint explains. Below the table, how many repeats, which protocol, backend, device "
               "and date produced it, and a link to each one's full results.")
    table, details = standings()
    st.dataframe(table, column_config={"verdict (ours)": st.column_config.TextColumn(width="medium")})
    st.caption("Data: training + validation and test images. The full verdict, the data and the run behind each "
               "of our rows:")
    for item in details:
        with st.container(border=True):
            st.markdown(f"**{item['title']}.** {item['verdict']}")
            st.caption(item["provenance"])
            left, right = st.columns(2)
            with left:
                results_link(item["id"], "Tables and images on Results")
            right.page_link("app_pages/why.py", label="Why: the explanation tested", icon=":material/psychology_alt:",
                            query_params={"dataset": item["dataset"]})
    quick_run()


guard(body)
