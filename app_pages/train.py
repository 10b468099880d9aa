"""Train: choose a protocol (with a time estimate), submit it to the job queue, watch the queue and live
learning curves, cancel; a finished job shows its numbers and opens its experiment on Results."""

from __future__ import annotations

import time

import streamlit as st

from core.protocol.vocabulary import (DATASETS, HEAD_NAMES, METHOD_NAMES, dataset_title, is_photo_dataset,
                                     method_title)
from core.app.catalog import few_steps_note, protocol_summary
from core.app.preview import missing_data
from core.jobs.progress import job_progress, live_title
from core.protocol.words import count_text, repeat_name
from ui.charts import curves_figure
from core.results.store import StoreError
from ui.common import cache_problem, data_folder_box, guard, limits, store, unexpected
from ui.experiments import results_link
from ui.format import p_text, pct, signed_pct
from ui.jobs import WATCH_KEY, failure_text, job_queue, run_estimate, submit
from ui.protocol_form import option_inputs


def protocol_form():
    """The experiment's settings; returns ``(Protocol, repeats)`` when submitted, else None.

    Every protocol widget comes from the option's one declaration on :class:`Protocol`
    (:func:`ui.protocol_form.option_inputs`); this page adds only what is not a protocol field (the data folder,
    the repeat count) and the demo's caps. Plain widgets rather than an ``st.form``: a form's widgets cannot
    react to each other before it is submitted, and here the subset fields follow their checkboxes and the time
    estimate follows every change.
    """
    from core.protocol.config import Protocol

    lim = limits()
    dataset = st.selectbox("Dataset", DATASETS, format_func=dataset_title, key="train_dataset")
    if is_photo_dataset(dataset) and lim.demo:
        st.info("Photo datasets need a folder on the server, which demo mode does not allow. "
                "Choose Fashion-MNIST or CIFAR-10.")
    path = data_folder_box(dataset)
    repeats = st.number_input("Repeats", 1, lim.max_repeats, min(3, lim.max_repeats), key="train_repeats",
                              help="The paper: 20.")
    caps = {"epochs": lim.max_epochs, "limit": lim.max_train_images, "test_limit": lim.max_test_images}
    forced = ({"limit": lim.max_train_images, "test_limit": lim.max_test_images} if lim.demo else {})
    values = option_inputs(Protocol, "main", skip=("dataset",), caps={k: v for k, v in caps.items() if v},
                           forced=forced)
    with st.expander("Protocol options (the points the paper leaves open)"):
        values |= option_inputs(Protocol, "open")
    values |= {"dataset": dataset, "data_path": path}
    try:
        protocol = Protocol(**values)
    except ValueError as exc:
        st.error(f"This protocol is not valid: {exc}")
        return None
    st.caption(run_estimate(protocol, int(repeats)))
    missing = missing_data(protocol)
    if missing:
        st.warning(f"Not ready to queue: {missing}", icon=":material/folder_off:")
    if not st.button("Submit to the queue", type="primary", key="train_submit", disabled=bool(missing)):
        return None
    return protocol, int(repeats)


def job_label(job: dict) -> str:
    prog = job.get("progress") or {}
    return (f"{job['id']} · {job['state']} · {job['protocol'].get('dataset')} · "
            f"{prog.get('repeats_done', 0)}/{job.get('repeats')} repeats")


def job_protocol(job: dict) -> str:
    """The dataset and what differs from the paper's protocol: short enough for the queue table."""
    from core.protocol.config import Protocol

    try:
        protocol = Protocol.from_dict(job["protocol"])
    except (KeyError, TypeError, ValueError):
        return job.get("describe", "")
    return f"{protocol.dataset}: {protocol_summary(protocol)}"


def finished_summary(runs: list) -> None:
    """A finished job's answer on the spot: mean test accuracies, the paired p-values and the verdict."""
    from core.results import stats

    means = stats.table1(runs)["test mean"].to_list()
    tests = stats.table2(runs)
    tests = tests[tests["repeats used"] == "all repeats"]
    m = st.columns(3)
    m[0].metric(f"{method_title('stage1')}, test", pct(means[0]))
    for col, label, mean, p, n in zip(m[1:], [f"{name}, test" for name in HEAD_NAMES.values()], means[1:],
                                      tests["p (t-test)"], tests["n"]):
        col.metric(label, pct(mean), delta=signed_pct(mean - means[0]),
                   help=f"Paired t-test against stage one: p = {p_text(p)} over {count_text(int(n), 'repeat')}.")
    p_line = " · ".join(f"{name} p = {p_text(p)}" for name, p in zip(HEAD_NAMES.values(), tests["p (t-test)"]))
    st.caption(f"Means over {count_text(len(runs), 'repeat')}; paired two-tailed t-test of test accuracy against "
               f"stage one: {p_line}.")
    for line in stats.at_chance(runs):
        st.warning(line)
    complete = [r for r in runs if "last_bn" in r["stage1"]]
    if complete:
        st.markdown(f"**Verdict:** {stats.verdict(complete, 'adam')}")
    note = few_steps_note(runs)
    if note:
        st.info(note, icon=":material/speed:")


def finished_curves(job: dict, runs: list) -> None:
    """For a finished job: the stored learning curves of each repeat (Figure 15)."""
    if not runs:
        return
    c = st.columns([1, 3])
    repeat = c[0].selectbox("Repeat", [r["repeat"] for r in runs], key=f"curve_repeat_{job['id']}",
                            format_func=repeat_name)
    stage = c[1].radio("Stage", list(METHOD_NAMES), horizontal=True, key=f"curve_stage_{job['id']}",
                       format_func=METHOD_NAMES.get)
    run = next(r for r in runs if r["repeat"] == repeat)
    st.plotly_chart(curves_figure(run[stage]["history"],
                                  f"{repeat_name(repeat).capitalize()}, {METHOD_NAMES[stage]}: learning curves"),
                    key=f"done_curves_{job['id']}_{repeat}_{stage}")
    st.caption(f"{run['describe']} · {run['env']['backend']} on {run['env']['device']} · {run['finished_at']}")


@st.fragment(run_every=2)
def live_queue() -> None:
    """Refreshes by itself every 2 s; the settings above stay responsive."""
    import pandas as pd

    try:
        queue, why = job_queue()
        if queue is None:
            st.info(why)
            return
        jobs = queue.jobs()
        workers = queue.workers()
        st.caption(f"{len(workers)} worker(s) alive · updated {time.strftime('%H:%M:%S')}")
        if not jobs:
            st.info("No jobs yet. Submit an experiment above (or the quick run on the Overview page).")
            return
        table = pd.DataFrame([{
            "job": j["id"], "state": j["state"], "repeats": f"{(j.get('progress') or {}).get('repeats_done', 0)}"
            f"/{j.get('repeats')}", "protocol": job_protocol(j),
            "submitted": time.strftime("%Y-%m-%d %H:%M", time.localtime(j.get("created", 0))),
            "error": failure_text(j) if j["state"] == "failed" else ""} for j in jobs])
        st.dataframe(table, hide_index=True, placeholder="–", height=min(35 * (len(table) + 1) + 3, 250))
        ids = [j["id"] for j in jobs]
        if st.session_state.get(WATCH_KEY) not in ids:
            active = [j["id"] for j in jobs if j["state"] in ("running", "queued")]
            st.session_state[WATCH_KEY] = active[0] if active else ids[0]
        by_id = {j["id"]: j for j in jobs}
        chosen = st.selectbox("Watch job", ids, key=WATCH_KEY, format_func=lambda i: job_label(by_id[i]))
        job = by_id[chosen]
        frac, text = job_progress(job)
        st.progress(frac, text=text)
        if job["state"] in ("queued", "running"):
            if st.button("Cancel this job", icon=":material/cancel:", key=f"cancel_{job['id']}"):
                if queue.cancel(job["id"]):
                    st.toast(f"Cancelled job {job['id']}; finished repeats stay stored.")
                else:
                    st.toast("That job had already finished.")
        if job["state"] == "failed":
            st.error(failure_text(job))
        prog = job.get("progress") or {}
        if job["state"] == "running":
            st.plotly_chart(curves_figure(prog.get("history") or [], live_title(job)), key="live_curves")
        elif job["state"] == "done":
            st.success(f"Done: {count_text(job['repeats'], 'repeat')} of {job.get('describe')}"
                       + (" (all from the cache, nothing retrained)" if job.get("from_cache") else ""))
            runs = store().runs(job["key"])
            if runs:
                finished_summary(runs)
            results_link(job["key"], "See Tables 1–3 and the images on the Results page")
            finished_curves(job, runs)
    except StoreError as exc:  # a damaged or untrusted queue: the store's line, or in demo mode an id
        st.warning(cache_problem(exc))
    except Exception as exc:  # noqa: BLE001 - a live panel must not break the page
        st.warning(unexpected(exc, "Could not read the queue right now"))


def body() -> None:
    st.title("Train")
    lim = limits()
    st.write("Submit an experiment: a protocol repeated N times. Each finished repeat is stored at once and never "
             "trained twice; a job whose protocol is already stored finishes immediately. Training runs in a "
             "separate worker process, so you can leave this page and come back.")
    if lim.demo:
        st.caption(f"Demo mode: at most {lim.max_train_images:,} training / {lim.max_test_images:,} test images, "
                   f"{lim.max_epochs} epochs, {lim.max_repeats} repeats, {lim.submits_per_hour} submissions "
                   "per hour.")
    queue, why = job_queue()
    if queue is None:
        st.info(f"{why} You can still train from the command line: `python -m core run --dataset fashion-mnist "
                "--limit 2000 --epochs 3 --repeats 2`.")
    else:
        result = protocol_form()
        if result is not None:
            protocol, repeats = result
            job_id, problem = submit(protocol, repeats)
            if job_id:
                st.success(f"Queued job {job_id}: {count_text(repeats, 'repeat')} of {protocol.describe()}")
            if problem:
                st.warning(problem)
    st.subheader("Queue and live learning curves")
    live_queue()


guard(body)
