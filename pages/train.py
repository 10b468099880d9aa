"""Train: choose a protocol, submit it to the job queue, watch the queue and live learning curves, cancel."""

from __future__ import annotations

import time

import streamlit as st

from ui.common import (curves_figure, data_path, data_path_key, duration, guard, job_queue, limits, store,
                       submit)

DATASETS = ("fashion-mnist", "cifar10", "dogs-cats", "face-mask", "folder")
WEIGHTS = ("last", "best")


def protocol_form():
    """The experiment form; returns ``(Protocol, repeats)`` on submit, else None."""
    from core import preview
    from core.config import Protocol

    lim = limits()
    default = Protocol()
    dataset = st.selectbox("Dataset", DATASETS, format_func=preview.DATASET_TITLES.get, key="train_dataset")
    path = None
    if dataset in ("dogs-cats", "face-mask", "folder"):
        if lim.demo:
            st.info("Photo datasets need a folder on the server, which demo mode does not allow. "
                    "Choose Fashion-MNIST or CIFAR-10.")
        else:
            st.text_input("Data folder (class sub-folders, or training_set/ + test_set/)", key=data_path_key(dataset),
                          placeholder="/data/" + dataset)
            path = data_path(dataset)
    with st.form("protocol"):
        c = st.columns(4)
        repeats = c[0].number_input("Repeats (paper: 20)", 1, lim.max_repeats, min(3, lim.max_repeats))
        epochs = c[1].number_input("Max epochs (paper: 50)", 1, lim.max_epochs,
                                   min(default.epochs, lim.max_epochs) if not lim.demo else lim.max_epochs)
        patience = c[2].number_input("EarlyStopping patience (paper: 10)", 1, 100, default.patience)
        batch = c[3].number_input("Batch size (paper: 32)", 1, 1024, default.batch_size)
        c = st.columns(4)
        max_limit = lim.max_train_images or 1_000_000
        use_limit = c[0].checkbox("Subset of training images", value=lim.demo or dataset == "cifar10",
                                  disabled=lim.demo, help="Stratified; quick looks. Demo mode always subsets.")
        limit = c[1].number_input("Training images", 10, max_limit, min(5000, max_limit), 500)
        use_test_limit = c[2].checkbox("Subset of test images", value=lim.demo, disabled=lim.demo)
        max_test = lim.max_test_images or 1_000_000
        test_limit = c[3].number_input("Test images", 10, max_test, min(1000, max_test), 500)
        with st.expander("Protocol options (the points the paper leaves open)"):
            c = st.columns(3)
            augment = c[0].radio("Augmentation", ("paper's choice", "on", "off"),
                                 help="The paper augments only the photo datasets.")
            reduce_lr = c[1].checkbox("ReduceLROnPlateau (Face Mask v2)", value=False,
                                      help="factor 0.5, patience 3, min 1e-5; the paper's v2 also uses patience 5")
            head_init = c[2].radio("Stage-two softmax", ("fresh", "warm"),
                                   help="fresh = the paper's brand-new model; warm = start from stage one's")
            c = st.columns(3)
            stage1_eval = c[0].radio("Stage-one weights reported", WEIGHTS,
                                     help="last epoch (paper's reading) or best val_accuracy checkpoint")
            features_from = c[1].radio("Features from stage-one weights", WEIGHTS)
            stage2_eval = c[2].radio("Stage-two weights reported", WEIGHTS)
            c = st.columns(3)
            momentum = c[0].number_input("SGD momentum", 0.0, 0.99, default.sgd_momentum, 0.05)
            seed = c[1].number_input("Split seed (repeat i trains with seed+i)", 0, 10_000, default.seed)
        go = st.form_submit_button("Submit to the queue", type="primary")
    if not go:
        return None
    if lim.demo:
        use_limit = use_test_limit = True
    values = dict(dataset=dataset, data_path=path, epochs=int(epochs), batch_size=int(batch),
                  patience=int(patience), reduce_lr=bool(reduce_lr),
                  augment={"paper's choice": None, "on": True, "off": False}[augment],
                  limit=int(limit) if use_limit else None, test_limit=int(test_limit) if use_test_limit else None,
                  stage1_eval=stage1_eval, features_from=features_from, head_init=head_init,
                  stage2_eval=stage2_eval, sgd_momentum=float(momentum), seed=int(seed))
    try:
        return Protocol(**values), int(repeats)
    except ValueError as exc:
        st.error(f"This protocol is not valid: {exc}")
        return None


def job_label(job: dict) -> str:
    prog = job.get("progress") or {}
    return (f"{job['id']} · {job['state']} · {job['protocol'].get('dataset')} · "
            f"{prog.get('repeats_done', 0)}/{job.get('repeats')} repeats")


def progress_text(job: dict) -> tuple[float, str]:
    prog = job.get("progress") or {}
    repeats = max(1, int(job.get("repeats") or 1))
    done = int(prog.get("repeats_done") or 0)
    frac = done / repeats
    stage = prog.get("stage") or job["state"]
    text = f"{job['state']}: {done}/{repeats} repeats stored"
    if job["state"] == "running":
        epoch, epochs = prog.get("epoch") or 0, prog.get("epochs") or 0
        text += f" · repeat {int(prog.get('repeat') or 0) + 1}, {stage}"
        if epoch:
            text += f", epoch {epoch}/{epochs}"
            share = 0.8 if stage == "stage1" else 0.1
            frac += share * (epoch / max(1, epochs)) / repeats
        if prog.get("eta_seconds") is not None:
            text += f" · about {duration(prog['eta_seconds'])} left (upper bound)"
    if job["state"] == "done":
        frac = 1.0
    return min(1.0, frac), text


def finished_curves(job: dict) -> None:
    """For a finished job: the stored stage-one curves of each repeat (Figure 15)."""
    runs = [r for r in store().runs(job["key"])]
    if not runs:
        return
    repeat = st.selectbox("Repeat", [r["repeat"] for r in runs], key=f"curve_repeat_{job['id']}")
    run = next(r for r in runs if r["repeat"] == repeat)
    stage = st.radio("Stage", ("stage1", "adam", "sgd"), horizontal=True, key=f"curve_stage_{job['id']}",
                     format_func={"stage1": "stage one (CNN)", "adam": "stage two, Adam",
                                  "sgd": "stage two, SGD"}.get)
    st.plotly_chart(curves_figure(run[stage]["history"], f"Repeat {repeat}, {stage}: learning curves"),
                    key=f"done_curves_{job['id']}_{repeat}_{stage}")
    st.caption(f"{run['describe']} · {run['env']['backend']} on {run['env']['device']} · {run['finished_at']}")


@st.fragment(run_every=2)
def live_queue() -> None:
    """Refreshes by itself every 2 s; the form above stays responsive."""
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
            f"/{j.get('repeats')}", "protocol": j.get("describe", ""),
            "submitted": time.strftime("%Y-%m-%d %H:%M", time.localtime(j.get("created", 0))),
            "error": j.get("error") or ""} for j in jobs])
        st.dataframe(table, hide_index=True, height=min(38 * (len(table) + 1) + 3, 250))
        ids = [j["id"] for j in jobs]
        if st.session_state.get("train_watch") not in ids:
            active = [j["id"] for j in jobs if j["state"] in ("running", "queued")]
            st.session_state["train_watch"] = active[0] if active else ids[0]
        by_id = {j["id"]: j for j in jobs}
        chosen = st.selectbox("Watch job", ids, key="train_watch", format_func=lambda i: job_label(by_id[i]))
        job = by_id[chosen]
        frac, text = progress_text(job)
        st.progress(frac, text=text)
        if job["state"] in ("queued", "running"):
            if st.button("Cancel this job", icon=":material/cancel:", key=f"cancel_{job['id']}"):
                if queue.cancel(job["id"]):
                    st.toast(f"Cancelled job {job['id']}; finished repeats stay stored.")
                else:
                    st.toast("That job had already finished.")
        if job["state"] == "failed":
            st.error(f"Failed: {job.get('error') or 'unknown error'}")
        history = (job.get("progress") or {}).get("history") or []
        if job["state"] == "running":
            stage = (job.get("progress") or {}).get("stage", "")
            st.plotly_chart(curves_figure(history, f"Live: repeat {int(job['progress'].get('repeat') or 0) + 1}, "
                                                   f"{stage}"), key="live_curves")
        elif job["state"] == "done":
            st.success(f"Done: {job['repeats']} repeat(s) of {job.get('describe')}"
                       + (" (all from the cache, nothing retrained)" if job.get("from_cache") else ""))
            st.page_link("pages/results.py", label="See Tables 1 and 2 on the Results page", icon=":material/table_chart:")
            finished_curves(job)
    except Exception as exc:  # noqa: BLE001 - a live panel must not break the page
        st.warning(f"Could not read the queue right now ({type(exc).__name__}: {exc}).")


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
                st.success(f"Queued job {job_id}: {repeats} repeat(s) of {protocol.describe()}")
            if problem:
                st.warning(problem)
    st.subheader("Queue and live learning curves")
    live_queue()


guard(body)
