"""Classify: a photo through stage one and both stage-two heads, side by side, with the input the model saw."""

from __future__ import annotations

import streamlit as st

from ui.common import guard, limits, model_choices

TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"]
INVERT = {"auto (by the border)": None, "invert": True, "do not invert": False}


@st.cache_resource(show_spinner="Loading the models…", max_entries=4)
def load(paths: tuple[tuple[str, str], ...], class_names: tuple[str, ...], stamp: tuple[float, ...]):
    from pathlib import Path

    from core.classify import load_models

    return load_models({k: Path(v) for k, v in paths}, list(class_names))


def _stamp(paths) -> tuple[float, ...]:
    import os

    return tuple(os.stat(p).st_mtime for p in paths.values())


def probability_chart(pred, method: str, title: str):
    import plotly.graph_objects as go

    probs = pred.probabilities[method]
    top = int(probs.argmax())
    colors = ["#c0392b" if i == top else "#9ab8d8" for i in range(len(probs))]
    fig = go.Figure(go.Bar(x=probs, y=pred.class_names, orientation="h", marker_color=colors,
                           text=[f"{p:.1%}" for p in probs], textposition="auto",
                           hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(title=title, height=90 + 26 * len(probs), margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(range=[0, 1], tickformat=".0%"), yaxis=dict(autorange="reversed"))
    return fig


def get_photo(lim) -> tuple[bytes | None, str]:
    source = st.radio("Photo", ("Upload a file", "Take one with the camera"), horizontal=True,
                      label_visibility="collapsed")
    if source == "Upload a file":
        up = st.file_uploader(f"An image (JPEG or PNG; up to {lim.max_upload_mb} MB)", type=TYPES,
                              max_upload_size=lim.max_upload_mb)
    else:
        up = st.camera_input("Take a photo")
    if up is None:
        return None, ""
    return up.getvalue(), getattr(up, "name", "camera photo")


def show_prediction(pred, models, name: str) -> None:
    from core.classify import METHOD_LABELS

    st.markdown(f"#### Predictions for *{name}*")
    cols = st.columns([1.3, 2, 2, 2])
    with cols[0]:
        img = pred.image
        h, w = img.shape[:2]
        scale = max(1, 168 // max(h, w))
        import numpy as np

        big = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
        st.image(big if big.shape[-1] == 3 else big[..., 0], width="stretch",
                 caption=f"What the model saw: {w}×{h}×{img.shape[-1]} uint8"
                 + (", inverted" if pred.inverted else ""))
    for col, method in zip(cols[1:], ("stage1", "adam", "sgd")):
        label, p = pred.top(method)
        with col:
            st.metric(METHOD_LABELS[method], label)
            st.caption(f"{p:.1%} probability for the top class")
            st.plotly_chart(probability_chart(pred, method, ""), key=f"probs_{method}")


def body() -> None:
    from core.imageio import ImageError

    st.title("Classify")
    st.write("Upload a photo (or take one): it is decoded by the same function that reads the datasets, resized to "
             "the model's input, and classified by the stage-one CNN and by both stage-two heads on that CNN's "
             "features.")
    lim = limits()
    choices = model_choices()
    if not choices:
        st.info("No trained model yet. Train one (the Overview page's quick run takes about a minute), or ship a "
                "reference model set in `reference/` with `python -m core bundle`.")
        st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
        return
    pick = st.selectbox("Model", list(range(len(choices))), format_func=lambda i: choices[i].label)
    choice = choices[pick]
    paths = {k: str(v) for k, v in choice.paths.items()}
    models = load(tuple(sorted(paths.items())), tuple(choice.class_names), _stamp(paths))
    st.caption(f"{choice.dataset} · input {'×'.join(map(str, models.input_shape))} · classes: "
               f"{', '.join(models.class_names)} · {choice.source}")
    invert = None
    if models.channels == 1:
        invert = INVERT[st.radio("Fashion-MNIST items are light on a dark background; a photo of a dark item on a "
                                 "light background is inverted", list(INVERT), horizontal=True)]
    data, name = get_photo(lim)
    if data is None:
        return
    if len(data) > lim.max_upload_mb * 1024 * 1024:
        st.error(f"The file is larger than {lim.max_upload_mb} MB.")
        return
    from core.classify import classify

    try:
        pred = classify(models, data, invert=invert, max_pixels=lim.max_pixels)
    except ImageError as exc:
        st.error(f"Could not use this file: {exc}")
        return
    show_prediction(pred, models, name)


guard(body)
