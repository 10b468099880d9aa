"""Datasets: availability (and how to get each one), split sizes, class distribution, sample grids."""

from __future__ import annotations

import streamlit as st

from core.protocol.vocabulary import DATASETS, dataset_title, is_keras_dataset
from ui.common import data_folder_box, guard, limits, unexpected
from ui.format import breakable

SAMPLES_PER_CLASS = 8


@st.cache_data(show_spinner="Reading the dataset's class counts…", max_entries=16)
def summary(dataset: str, path: str | None, stamp: float):
    from core.app import preview

    return preview.summarize(dataset, path)


@st.cache_data(show_spinner="Picking sample images…", max_entries=16)
def samples(dataset: str, path: str | None, per_class: int, seed: int, stamp: float):
    from core.app import preview

    if is_keras_dataset(dataset):
        return preview.keras_samples(dataset, path, per_class, seed)
    return preview.folder_samples(path, per_class, size=128, seed=seed)


@st.cache_data(show_spinner="Looking for duplicate files…", max_entries=16)
def duplicates(path: str, test_split: float, stamp: float):
    from core.app import preview

    return preview.find_duplicates(path, test_split)


def duplicates_note(path: str, protocol) -> None:
    """Byte-identical files, and how many test images a random split leaves with a copy in training."""
    found = duplicates(path, protocol.test_split, _stamp(path))
    if not found.groups:
        st.caption("Duplicates: no two image files have the same bytes.")
        return
    n = found.test_with_copy
    about = f"{n:.1f}" if n < 10 else f"{n:.0f}"
    where = (f"{n:.0f} test image(s) are copies of a training image" if found.exact else
             f"under the paper's random {protocol.test_split:.0%} test split, about {about} test images per "
             "repeat are copies of a training or validation image")
    text = (f"**Duplicates:** {found.copies} file(s) are byte-identical copies of others ({len(found.groups)} "
            f"distinct images, e.g. {' = '.join(found.groups[0][:3])}); {where}. On those, test accuracy "
            "measures memory, not generalisation.")
    if found.across_classes:
        text += f" {found.across_classes} of the groups sit in different class folders: one image, two labels."
    st.warning(text, icon=":material/content_copy:")


def _stamp(path: str | None) -> float:
    """Changes when a pointed-at folder changes, so cached scans do not go stale."""
    import os

    try:
        return os.stat(path).st_mtime if path else 0.0
    except OSError:
        return 0.0


def distribution_chart(summ, protocol):
    import pandas as pd
    import plotly.express as px

    counts = summ.split_counts(protocol)
    frame = pd.DataFrame([{"class": name, "split": split, "images": counts[split][i]}
                          for split in ("train", "val", "test") for i, name in enumerate(summ.class_names)])
    fig = px.bar(frame, x="class", y="images", color="split", barmode="group",
                 color_discrete_map={"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"})
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=30, b=10), legend_title_text="",
                      title="Images per class and split (the paper's Figures 9 and 12)")
    return fig


def folder_picker(dataset: str) -> str | None:
    if limits().demo:
        if not is_keras_dataset(dataset):
            st.caption("Pointing at server folders is switched off in demo mode.")
        return None
    return data_folder_box(dataset)


def show(dataset: str) -> None:
    from core.app import preview
    from core.protocol.config import Protocol

    path = folder_picker(dataset)
    summ = summary(dataset, path, _stamp(path))
    if not summ.available:
        st.warning(f"**Not available.** {summ.message}")
        return
    st.success(f"Available · {summ.source} · {summ.layout}", icon=":material/check_circle:")
    protocol = Protocol(dataset="folder" if dataset == "folder" else dataset,
                        data_path=path or ("." if dataset == "folder" else None))
    sizes = summ.sizes(protocol)
    c = st.columns(4)
    c[0].metric("classes", len(summ.class_names))
    c[1].metric("train", f"{sizes['train']:,}")
    c[2].metric("validation", f"{sizes['val']:,}")
    c[3].metric("test", f"{sizes['test']:,}")
    how = ("the shipped test split" if summ.test_counts is not None
           else f"{protocol.test_split:.0%} of each class carved out for test")
    st.caption(f"Splits as the paper's protocol makes them: {protocol.validation_split:.0%} of the training pool "
               f"for validation (stratified), {how}. Training with a `limit` uses a stratified subset of the "
               "training pool.")
    if summ.ignored:
        st.caption(f"{len(summ.ignored)} non-image file(s) are ignored, e.g. {summ.ignored[0]}.")
    st.plotly_chart(distribution_chart(summ, protocol), key=f"dist_{dataset}")
    if path:
        duplicates_note(path, protocol)

    st.markdown("**Sample images per class** (the paper's Figures 5, 7, 10, 13)")
    seed = st.session_state.get(f"sample_seed::{dataset}", 0)
    if st.button("Show other samples", key=f"resample_{dataset}"):
        seed += 1
        st.session_state[f"sample_seed::{dataset}"] = seed
    names, grid = samples(dataset, path, SAMPLES_PER_CLASS, seed, _stamp(path))
    scale = 3 if dataset == "fashion-mnist" else (2 if dataset == "cifar10" else 1)
    for name, images in zip(names, grid):
        strip = preview.mosaic(images, scale=scale)
        cols = st.columns([1, 6])
        cols[0].markdown(f"**{breakable(name)}**")
        if strip is None:
            cols[1].caption("no readable images")
        else:
            cols[1].image(strip)


def body() -> None:
    st.title("Datasets")
    st.write("The paper uses two Keras datasets and two Kaggle photo sets. This page reads only class counts "
             "and the few images it shows; nothing is trained here.")
    tabs = st.tabs([dataset_title(d) for d in DATASETS])
    for tab, dataset in zip(tabs, DATASETS):
        with tab:
            try:
                show(dataset)
            except Exception as exc:  # noqa: BLE001 - one dataset's problem must not hide the others
                st.error(unexpected(exc, f"Could not show {dataset_title(dataset)}"))


guard(body)
