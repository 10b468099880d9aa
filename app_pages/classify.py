"""Classify: a photo through stage one and both stage-two heads, with how unlike the model's training images it
is (out-of-distribution check), why stage one answered as it did (Grad-CAM), and the model set to download."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING

import streamlit as st

from core.protocol.words import count_text
from ui.common import guard, limits, model_choices

TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"]
INVERT = {"auto (by the border)": None, "invert": True, "do not invert": False}
MODEL_KEY = "classify_model"
FITS_KEY = "classify_photo_fits"
log = logging.getLogger("two_stage.app")

if TYPE_CHECKING:
    from core.classify.ood import Verdict

# index in the model choices -> (the model chooser's probability, its held-out accuracy on that dataset); a
# comment, not a docstring: Streamlit's magic would print a bare string on the page
Route = dict[int, tuple[float, float]]


@st.cache_resource(show_spinner="Loading the models…", max_entries=8)
def load(paths: tuple[tuple[str, str], ...], class_names: tuple[str, ...], ood_path: str | None,
         stamp: tuple[float, ...]):
    from pathlib import Path

    from core.classify.classify import load_models

    return load_models({k: Path(v) for k, v in paths}, list(class_names), Path(ood_path) if ood_path else None)


def load_choice(choice):
    import os

    paths = {k: str(v) for k, v in choice.paths.items()}
    files = list(paths.values()) + ([str(choice.ood_path)] if choice.ood_path else [])
    return load(tuple(sorted(paths.items())), tuple(choice.class_names),
                str(choice.ood_path) if choice.ood_path else None, tuple(os.stat(p).st_mtime for p in files))


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


def shipped_with_statistics(choices) -> dict[str, object]:
    """Label -> loaded model set, for every shipped model with statistics (loaded once per server)."""
    loaded = {}
    for choice in choices:
        if choice.shipped and choice.ood_path:
            try:
                loaded[choice.label] = load_choice(choice)
            except Exception:  # noqa: BLE001 - one broken bundle must not take Classify down
                log.exception("could not load %s", choice.label)
    return loaded


def shipped_router(choices):
    """The model chooser (:mod:`core.classify.router`) and the index in ``choices`` of each model it routes to, or None
    (none shipped, fitted for other models, or unreadable: then the rank rule preselects)."""
    from core.classify import router

    try:
        return router.for_choices(choices)
    except router.RouterError as exc:
        st.caption(f"Preselecting without the model chooser: {exc}")
        return None


def photo_fits(choices, data: bytes, max_pixels: int) -> tuple[dict[int, Verdict], Route | None, float, bool]:
    """For the shipped models with statistics: index in ``choices`` -> the model's out-of-distribution verdict
    on the photo; index -> the model chooser's probability that the photo is of that model's dataset, and how
    often it was right on held-out images of it (None without a chooser); the seconds that took, and whether
    the photo is new. Measured once per photo: changing the model or the inversion does not measure again."""
    from core.classify.classify import fit_predictions

    digest = hashlib.sha256(data).hexdigest()
    memo = st.session_state.get(FITS_KEY)
    new = memo is None or memo["digest"] != digest
    if new:
        loaded = shipped_with_statistics(choices)
        started = time.perf_counter()
        preds = dict(zip(loaded, fit_predictions(list(loaded.values()), data, max_pixels=max_pixels)))
        route = None
        found = shipped_router(choices)
        if found and all(choices[i].label in preds for i in found[1]):
            router, order = found
            probs = router.route([preds[choices[i].label] for i in order])
            route = {choices[i].label: (float(p), float(a)) for i, p, a in zip(order, probs, router.accuracy)}
        memo = {"digest": digest, "fits": {label: p.ood for label, p in preds.items() if p is not None},
                "route": route, "seconds": time.perf_counter() - started}
        st.session_state[FITS_KEY] = memo
    fits = {i: memo["fits"][c.label] for i, c in enumerate(choices) if c.label in memo["fits"]}
    route = ({i: memo["route"][c.label] for i, c in enumerate(choices) if c.label in memo["route"]}
             if memo["route"] else None)
    return fits, route, memo["seconds"], new


def pick_default(choices, fits: dict[int, Verdict], route: Route | None, new_photo: bool) -> None:
    """On a new photo, preselect the model the chooser assigns it to (:mod:`core.classify.router`), else the one whose
    own test images it is most typical of (:func:`core.classify.classify.best_fit`); the visitor's own choice stands
    until the next photo."""
    if st.session_state.get(MODEL_KEY, 0) >= len(choices):
        st.session_state[MODEL_KEY] = 0
    if new_photo and route:
        st.session_state[MODEL_KEY] = max(route, key=lambda i: route[i][0])
    elif new_photo and fits:
        st.session_state[MODEL_KEY] = _fits_in_order(fits)[0]


def route_caption(choices, route: Route | None) -> None:
    """What the model chooser said, and how often it is right, under the Model box."""
    if not route:
        return
    ranked = sorted(route.items(), key=lambda kv: -kv[1][0])
    said = ", ".join(f"{choices[i].title} {p:.0%}" for i, (p, _) in ranked)
    right = ", ".join(f"{a:.0%} of {choices[i].title}" for i, (_, a) in ranked)
    st.caption(f"Preselected by the model chooser ({said}), a softmax regression on the shipped models' features "
               f"of the photo. On held-out images it picked the right model for {right} (README, \"Classify\"). "
               "Pick another model under Model to compare its answer.")


def ood_warning(pred, choice, choices, fits: dict[int, Verdict], picked: int, problem: str | None) -> None:
    from core.classify.ood import what_it_knows

    verdict = pred.ood
    if verdict is None:
        why = (f"{problem}." if problem else "its statistics of the training images are computed when a model "
               "set is bundled (`python -m core bundle`); the shipped models have them.")
        st.caption(f"No out-of-distribution check for this model: {why}"
                   + _suggestion(choices, fits, picked, flagged=False))
        return
    if verdict.flagged:
        st.warning(
            f"**This photo looks out-of-distribution for this model.** Its features are further from every "
            f"class the model knows than {verdict.score_rank:.0%} of the model's own test images (score "
            f"{verdict.score:.2f} against a threshold of {verdict.threshold:.2f}, the 99th percentile of the test "
            f"images). This model only knows {what_it_knows(choice.dataset, choice.class_names)}, so its answer "
            f"below is the nearest of those classes, not a recognition"
            + (f", however sure it looks ({verdict.msp:.0%})." if verdict.msp >= 0.5 else ".")
            + _suggestion(choices, fits, picked, flagged=True), icon=":material/warning:")
    else:
        st.caption(f"Out-of-distribution check passed: the photo is within the range of the model's test images "
                   f"(further from the classes than {verdict.score_rank:.0%} of them; the threshold is the 99th "
                   f"percentile).")
        also = _also_within(choices, fits, picked)
        if also:
            st.info(f"The photo is also within the range of the shipped {also}. Between the photo models this "
                    "check tells little apart (a face passes the pet model's check, a pet the face model's): "
                    "compare the answers by picking another model under Model.",
                    icon=":material/compare_arrows:")


def _fits_in_order(fits: dict[int, Verdict]) -> list[int]:
    """Indices in ``choices``, the model the photo is most typical of first (:func:`core.classify.classify.fit_order`)."""
    from core.classify.classify import fit_order

    indices = list(fits)
    return [indices[j] for j in fit_order([fits[i] for i in indices])]


def _others_within(choices, fits: dict[int, Verdict], picked: int) -> list[int]:
    """The other shipped models, of other datasets, whose check the photo passes, most typical first."""
    return [i for i in _fits_in_order(fits)
            if not fits[i].flagged and i != picked and choices[i].dataset != choices[picked].dataset]


def _suggestion(choices, fits: dict[int, Verdict], picked: int, flagged: bool) -> str:
    better = _others_within(choices, fits, picked)
    if better:
        return (f" Photos like this one are within the range of the shipped **{choices[better[0]].title}** model: "
                "pick it under Model.")
    if flagged and fits:
        return " None of the shipped models has seen photos like this one."
    return ""


def _also_within(choices, fits: dict[int, Verdict], picked: int) -> str:
    """:func:`_others_within` in words."""
    return " and the ".join(f"**{choices[i].title}** model (further from its classes than "
                            f"{fits[i].score_rank:.0%} of its test images)"
                            for i in _others_within(choices, fits, picked))


def show_prediction(pred, name: str) -> None:
    from core.protocol.vocabulary import METHODS, method_title

    st.markdown(f"#### Predictions for *{name}*")
    cols = st.columns(len(METHODS))
    for col, method in zip(cols, METHODS):
        label, p = pred.top(method)
        with col:
            st.metric(method_title(method), label)
            st.caption(f"{p:.1%} probability for the top class")
            st.plotly_chart(probability_chart(pred, method, ""), key=f"probs_{method}")


def show_input_and_heat_map(pred, models) -> float:
    """What the model saw, and beside it stage one's Grad-CAM (computed here, after the answer is on the
    page); returns the heat map's time in seconds."""
    from core.classify import explain
    from core.classify.classify import heat_map

    st.markdown("#### Why this answer")
    img = pred.image
    h, w = img.shape[:2]
    saw, why, notes = st.columns([1, 1, 1.6])
    saw.image(explain.enlarge(img), width="stretch", caption=f"What the model saw: {w}×{h}×{img.shape[-1]} uint8"
              + (", inverted" if pred.inverted else ""))
    label, _ = pred.top("stage1")
    with why, st.spinner("Computing the heat map…"):
        started = time.perf_counter()
        try:
            heat = heat_map(models, pred)
        except (ValueError, NotImplementedError) as exc:  # a network without a top-level convolution
            st.caption(f"No heat map for this model: {exc}.")
            return time.perf_counter() - started
        seconds = time.perf_counter() - started
        st.image(explain.overlay(img, heat), width="stretch",
                 caption=f"Heat map (Grad-CAM) of stage one's answer: {label}")
        if heat.max() <= 0:
            st.caption("The map is empty: no region's activation raised this class's score, so nothing in the "
                       "photo argued for the answer (common for a barely trained model).")
    notes.markdown(
        "**Reading the heat map.** Red marks the regions whose activation in the last convolution pushed stage "
        f"one towards *{label}*, blue the regions that did not matter for it (Grad-CAM: the last convolution's "
        "feature maps weighted by the gradient of that class's score). The stage-two heads read features "
        "computed from these same maps, but weigh them their own way.")
    return seconds


def export_downloads(choice, models, demo: bool) -> None:
    import functools

    from core.classify import export

    with st.expander("Download this model set"):
        st.write("One model with three outputs: stage one's class probabilities, then the Adam head's and the SGD "
                 "head's. Input: a batch of "
                 f"{'×'.join(map(str, models.input_shape))} images with pixel values 0-255 as float32 (the model "
                 f"rescales them itself). Classes, in output order: {', '.join(models.class_names)}.")
        stem = f"two_stage_{choice.dataset}_{choice.key[:6]}_r{choice.repeat + 1}"
        left, right = st.columns(2)
        left.download_button("Keras model (.keras)", functools.partial(export.keras_bytes, models),
                             file_name=f"{stem}.keras", mime="application/octet-stream", on_click="ignore",
                             icon=":material/download:")
        right.download_button("LiteRT model (.tflite)", functools.partial(export.tflite_bytes, models),
                              file_name=f"{stem}.tflite", mime="application/octet-stream", on_click="ignore",
                              icon=":material/download:", disabled=demo,
                              help=("The public demo does not convert models (it takes the server several seconds "
                                    "of work); run the app locally for the LiteRT file." if demo else
                                    "Converted when you click (several seconds); runs with the LiteRT / TensorFlow "
                                    "Lite interpreter on phones and small devices."))


def answer(data: bytes, name: str, choices, pick: int, models, invert, fits: dict[int, Verdict], fit_s: float,
           max_pixels: int) -> None:
    """The probabilities first (fast), then the out-of-distribution verdict's details and the heat map."""
    from core.classify.classify import classify
    from core.data.imageio import ImageError

    try:
        started = time.perf_counter()
        pred = classify(models, data, invert=invert, max_pixels=max_pixels)
        answer_s = time.perf_counter() - started
    except ImageError as exc:
        st.error(f"Could not use this file: {exc}")
        return
    ood_warning(pred, choices[pick], choices, fits, pick, models.ood_problem)
    show_prediction(pred, name)
    heat_s = show_input_and_heat_map(pred, models)
    st.caption(f"Answer in {1000 * answer_s:.0f} ms, heat map in {1000 * heat_s:.0f} ms; measuring the photo "
               f"against {count_text(len(fits), 'shipped model')} to preselect one took {1000 * fit_s:.0f} ms when "
               "it was uploaded (this server).")


def body() -> None:
    from core.data.imageio import ImageError
    from core.classify.ood import what_it_knows

    st.title("Classify")
    st.write("Upload a photo (or take one): it is decoded by the same function that reads the datasets, resized to "
             "the model's input, and classified by the stage-one CNN and by both stage-two heads on that CNN's "
             "features. The model preselected is the shipped one that a small model chooser, fitted on the "
             "shipped models' features of images from each dataset, assigns the photo to. It is usually right, "
             "not always (the README's \"Classify\" says how often), so check the Model box.")
    lim = limits()
    choices = model_choices()
    if not choices:
        st.info("No trained model yet. Train one (the Overview page's quick run takes about a minute), or ship a "
                "reference model set in `reference/` with `python -m core bundle`.")
        st.page_link("app_pages/train.py", label="Go to Train", icon=":material/model_training:")
        return
    data, name = get_photo(lim)
    if data is not None and len(data) > lim.max_upload_mb * 1024 * 1024:
        st.error(f"The file is larger than {lim.max_upload_mb} MB.")
        return
    fits: dict[int, Verdict] = {}
    route, fit_s, new_photo = None, 0.0, False
    if data is not None:
        try:
            fits, route, fit_s, new_photo = photo_fits(choices, data, lim.max_pixels)
        except ImageError as exc:
            st.error(f"Could not use this file: {exc}")
            return
    pick_default(choices, fits, route, new_photo)
    pick = st.selectbox("Model", list(range(len(choices))), format_func=lambda i: choices[i].label, key=MODEL_KEY)
    route_caption(choices, route)
    choice = choices[pick]
    models = load_choice(choice)
    st.caption(f"{choice.title or choice.dataset}: knows {what_it_knows(choice.dataset, choice.class_names)} · "
               f"input {'×'.join(map(str, models.input_shape))} · classes: {', '.join(models.class_names)}")
    invert = None
    if models.channels == 1:
        invert = INVERT[st.radio("Fashion-MNIST items are light on a dark background; a photo of a dark item on a "
                                 "light background is inverted", list(INVERT), horizontal=True)]
    if data is not None:
        answer(data, name, choices, pick, models, invert, fits, fit_s, lim.max_pixels)
    export_downloads(choice, models, lim.demo)


guard(body)
