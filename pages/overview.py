"""Overview: the claim, the method as a diagram, where each dataset stands, and a one-click quick run."""

from __future__ import annotations

import streamlit as st

from ui.common import data_path, experiments, guard, job_queue, limits, pct, signed_pct, submit

QUICK = {"dataset": "fashion-mnist", "limit": 3000, "test_limit": 1000, "epochs": 12}
QUICK_REPEATS = 2


def quick_protocol():
    from core.config import Protocol

    lim = limits()
    values = dict(QUICK)
    if lim.max_train_images:
        values["limit"] = min(values["limit"], lim.max_train_images)
    if lim.max_test_images:
        values["test_limit"] = min(values["test_limit"], lim.max_test_images)
    values["epochs"] = min(values["epochs"], lim.max_epochs)
    return Protocol(**values), min(QUICK_REPEATS, lim.max_repeats)


def standings_table():
    import pandas as pd

    from core import paper, preview

    exps = experiments()
    rows, notes = [], []
    for dataset in ("fashion-mnist", "cifar10", "dogs-cats", "face-mask"):
        if dataset in ("fashion-mnist", "cifar10"):
            here = "yes" if preview.local_source(dataset) else "not found (see Datasets)"
        else:
            here = "folder chosen" if data_path(dataset) else "point at a folder on Datasets"
        exp = preview.best_experiment(exps, dataset)
        column = preview.paper_column(exp.protocol) if exp else paper.columns_for(dataset)[0]
        a, b, _, p = paper.TABLE2[column]
        row = {"dataset": preview.DATASET_TITLES[dataset], "data here": here,
               "paper (20 repeats): CNN → two-stage test": f"{pct(a)} → {pct(b)} ({signed_pct(b - a)}, "
                                                           f"p = {p:.2g})"}
        if exp:
            s1 = sum(r["stage1"][exp.protocol.stage1_eval]["test_accuracy"] for r in exp.runs) / len(exp.runs)
            s2 = sum(r["adam"][exp.protocol.stage2_eval]["test_accuracy"] for r in exp.runs) / len(exp.runs)
            row["ours: CNN → two-stage test"] = (f"{pct(s1)} → {pct(s2)} ({signed_pct(s2 - s1)}, "
                                                 f"{len(exp.runs)} repeats)")
            notes.append(f"**Ours, {preview.DATASET_TITLES[dataset]}** (vs paper column '{column}'): "
                         + preview.provenance_line(exp.runs, exp.source))
        else:
            row["ours: CNN → two-stage test"] = "not run yet"
        rows.append(row)
    return pd.DataFrame(rows), notes


def quick_run() -> None:
    from core import preview

    st.subheader("Quick run: the whole loop in about a minute")
    protocol, repeats = quick_protocol()
    st.write(f"Trains **{repeats} repeats** of the two-stage method on a small Fashion-MNIST subset "
             f"(**{protocol.limit:,}** training images, **{protocol.test_limit:,}** test images, "
             f"**{protocol.epochs}** epochs), then shows Tables 1 and 2 on the Results page. "
             "It uses the same job queue as the Train page.")
    st.caption(f"Protocol: {protocol.describe()}. A subset this small gives a fresh softmax head few optimizer "
               "steps per epoch, so the quick run shows the whole loop, not the paper's effect size.")
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
    c1, c2 = st.columns(2)
    c1.page_link("pages/train.py", label="Watch it train (live curves)", icon=":material/model_training:")
    c2.page_link("pages/results.py", label="See the results", icon=":material/table_chart:")


@st.fragment(run_every=2)
def quick_status(job_id: str) -> None:
    try:
        queue, _ = job_queue()
        job = queue.job(job_id) if queue else None
        if job is None:
            st.caption("The quick-run job is no longer in the queue.")
            return
        prog = job.get("progress") or {}
        done, total = prog.get("repeats_done", 0) or 0, job.get("repeats") or 1
        state = job.get("state", "?")
        text = f"Quick run: **{state}**, {done}/{total} repeats done"
        if state == "running" and prog.get("stage"):
            text += f" · {prog.get('stage')} epoch {prog.get('epoch') or 0}/{prog.get('epochs') or '?'}"
        st.progress(min(1.0, done / total) if state != "done" else 1.0, text=text)
        if state == "failed":
            st.error(f"The quick run failed: {job.get('error') or 'unknown error'}")
    except Exception as exc:  # noqa: BLE001
        st.caption(f"Could not read the job's status ({type(exc).__name__}).")


def body() -> None:
    from core import preview

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
               "experiment with the most repeats for that dataset (\"not run\" until you train one); below the table, "
               "how many repeats, which protocol, backend, device and date produced it.")
    table, notes = standings_table()
    st.dataframe(table, hide_index=True)
    for note in notes:
        st.caption(note)
    quick_run()


guard(body)
