"""Classify: a photo through stage one and both stage-two heads, with how unlike the model's training images it
is (out-of-distribution check), why stage one answered as it did (Grad-CAM), and the model set to download."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from core.protocol.words import count_text
from ui.common import guard, limits, model_choices
from ui.format import breakable

INVERT = {"auto (by the border)": None, "invert": True, "do not invert": False}
MODEL_KEY = "classify_model"
FITS_KEY = "classify_photo_fits"
SAMPLE_KEY = "classify_sample"
SAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "samples"
# The sample row (assets/samples/README.md says where each comes from): each shipped model's kind of photo, one
# the model chooser is unsure about, and one that none of the models knows (a comment: Streamlit's magic would
# print a bare string on the page)
SAMPLES = {"cat.jpg": "a cat", "dog_close_up.jpg": "a dog, close up", "face_with_mask.jpg": "a face with a mask",
           "face_without_mask.jpg": "a face without one", "t_shirt.png": "a T-shirt",
           "fire_truck.jpg": "a fire truck"}
log = logging.getLogger("two_stage.app")

if TYPE_CHECKING:
    from core.classify.preselect import Preselection

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
    """The visitor's photo: an upload or a camera shot, else the sample photo picked in the row below."""
    from core.data.imageio import FORMAT_NAMES, IMAGE_SUFFIXES

    source = st.radio("Photo", ("Upload a file", "Take one with the camera"), horizontal=True,
                      label_visibility="collapsed")
    if source == "Upload a file":
        up = st.file_uploader(f"An image ({FORMAT_NAMES}; up to {lim.max_upload_mb} MB)",
                              type=sorted(s.lstrip(".") for s in IMAGE_SUFFIXES), max_upload_size=lim.max_upload_mb)
    else:
        up = st.camera_input("Take a photo")
    if up is not None:
        return up.getvalue(), getattr(up, "name", "camera photo")
    return sample_row()


@st.cache_data(show_spinner=False)
def _sample_bytes(name: str) -> bytes:
    return (SAMPLES_DIR / name).read_bytes()


def sample_row() -> tuple[bytes | None, str]:
    """A row of sample photos to try with one click; ``(bytes, name)`` of the one picked, else ``(None, "")``."""
    present = [name for name in SAMPLES if (SAMPLES_DIR / name).is_file()]
    if not present:
        return None, ""
    st.image([_sample_bytes(n) for n in present], width=72)
    picked = st.pills("Or try one of these sample photos (in the order shown)", present, format_func=SAMPLES.get,
                      key=SAMPLE_KEY)
    if not picked:
        return None, ""
    return _sample_bytes(picked), SAMPLES[picked]


def shipped_candidates(choices) -> list[object | None]:
    """Per choice, its loaded model set when it is shipped with statistics, else None: the models a photo is
    measured against to preselect one (loaded once per server)."""
    candidates: list[object | None] = []
    for choice in choices:
        loaded = None
        if choice.shipped and choice.ood_path:
            try:
                loaded = load_choice(choice)
            except Exception:  # noqa: BLE001 - one broken bundle must not take Classify down
                log.exception("could not load %s", choice.label)
        candidates.append(loaded)
    return candidates


def shipped_chooser(choices):
    """The model chooser (:mod:`core.classify.router`) and the index in ``choices`` of each model it routes to, or
    None (none shipped, fitted for other models, or unreadable: then the rank rule preselects)."""
    from core.app import catalog
    from core.classify import router

    try:
        return catalog.model_chooser(choices)
    except router.RouterError as exc:
        st.caption(f"Preselecting without the model chooser: {exc}")
        return None


def measure_photo(choices, data: bytes, max_pixels: int) -> tuple[Preselection, bool]:
    """The photo against every shipped model (:func:`core.classify.preselect.preselect`), and whether the photo is
    new. Measured once per photo: changing the model or the inversion does not measure again."""
    from core.classify.preselect import preselect

    digest = (hashlib.sha256(data).hexdigest(), tuple(c.label for c in choices))
    memo = st.session_state.get(FITS_KEY)
    new = memo is None or memo["digest"] != digest
    if new:
        chooser = shipped_chooser(choices)
        memo = {"digest": digest, "selection": preselect(shipped_candidates(choices), data, chooser,
                                                         max_pixels=max_pixels)}
        st.session_state[FITS_KEY] = memo
    return memo["selection"], new


def pick_default(choices, selection: Preselection | None, new_photo: bool) -> None:
    """On a new photo, preselect the model :func:`core.classify.preselect.preselect` chose; the visitor's own
    choice stands until the next photo."""
    if st.session_state.get(MODEL_KEY, 0) >= len(choices):
        st.session_state[MODEL_KEY] = 0
    if new_photo and selection is not None and selection.pick is not None:
        st.session_state[MODEL_KEY] = selection.pick


def route_caption(choices, route: Route | None) -> None:
    """What the model chooser said, and how often it is right, under the Model box."""
    if not route:
        return
    ranked = sorted(route.items(), key=lambda kv: -kv[1][0])
    said = ", ".join(f"{choices[i].title} {p:.0%}" for i, (p, _) in ranked)
    right = ", ".join(f"{a:.0%} of {choices[i].title}" for i, (_, a) in ranked)
    st.caption(f"Preselected by the model chooser ({said}), a softmax regression on the shipped models' features "
               f"of the photo. On held-out images it picked the right model for {right} (docs/pages.md, \"Classify\"). "
               "Pick another model under Model to compare its answer.")


def ood_warning(pred, choice, choices, selection: Preselection | None, picked: int, problem: str | None) -> None:
    from core.classify.ood import what_it_knows

    verdict = pred.ood
    if verdict is None:
        why = (f"{problem}." if problem else "its statistics of the training images are computed when a model "
               "set is bundled (`python -m core bundle`); the shipped models have them.")
        st.caption(f"No out-of-distribution check for this model: {why}"
                   + _suggestion(choices, selection, picked, flagged=False))
        return
    if verdict.flagged:
        st.warning(
            f"**This photo looks out-of-distribution for this model.** Its features are further from every "
            f"class the model knows than {verdict.score_rank:.0%} of the model's own test images (score "
            f"{verdict.score:.2f} against a threshold of {verdict.threshold:.2f}, the 99th percentile of the test "
            f"images). This model only knows {what_it_knows(choice.dataset, choice.class_names)}, so its answer "
            f"below is the nearest of those classes, not a recognition"
            + (f", however sure it looks ({verdict.msp:.0%})." if verdict.msp >= 0.5 else ".")
            + _suggestion(choices, selection, picked, flagged=True), icon=":material/warning:")
    else:
        st.caption(f"Out-of-distribution check passed: the photo is as close to the classes the model knows as "
                   f"its own test images are ({_share(1 - verdict.score_rank)} of them are further away; a photo "
                   "is flagged only beyond the farthest 1 %).")
        also = _also_within(choices, selection, picked)
        if also and (selection is None or not selection.route):  # without a chooser, the check is all there is
            st.info(f"The photo is also within the range of the shipped {also}. Between the photo models this "
                    "check tells little apart (a face passes the pet model's check, a pet the face model's): "
                    "compare the answers by picking another model under Model.",
                    icon=":material/compare_arrows:")


def _share(fraction: float) -> str:
    """A share for reading that never rounds a small one to "0 %" or a large one to "100 %"."""
    percent = 100 * min(1.0, max(0.0, fraction))
    if 0 < percent < 1 or 99 < percent < 100:
        return f"{percent:.1f} %"
    return f"{percent:.0f} %"


def _others_within(choices, selection: Preselection | None, picked: int) -> list[int]:
    """The other shipped models, of other datasets, whose check the photo passes, most typical first."""
    if selection is None:
        return []
    verdicts = selection.verdicts
    return [i for i in selection.typical_first()
            if not verdicts[i].flagged and i != picked and choices[i].dataset != choices[picked].dataset]


def _suggestion(choices, selection: Preselection | None, picked: int, flagged: bool) -> str:
    better = _others_within(choices, selection, picked)
    if better:
        return (f" Photos like this one are within the range of the shipped **{choices[better[0]].title}** model: "
                "pick it under Model.")
    if flagged and selection is not None and selection.verdicts:
        return " None of the shipped models has seen photos like this one."
    return ""


def _also_within(choices, selection: Preselection | None, picked: int) -> str:
    """:func:`_others_within` in words."""
    verdicts = selection.verdicts if selection is not None else {}
    return " and the ".join(f"**{choices[i].title}** model ({_share(1 - verdicts[i].score_rank)} of its test "
                            "images are further from its classes)"
                            for i in _others_within(choices, selection, picked))


def second_opinion(choices, selection: Preselection | None, picked: int) -> None:
    """Beside the answer: when the model chooser is unsure (or chose another model than the one shown), say so
    and give the other model's answer, which the preselection already measured."""
    from core.classify.preselect import UNSURE

    other = selection.alternative(picked) if selection is not None else None
    if other is None:
        return
    route = selection.route or {}
    said = ", ".join(f"{choices[i].title} {route[i][0]:.0%}" for i in sorted(route, key=lambda i: -route[i][0]))
    theirs = selection.predictions[other]
    answers = " · ".join(f"{title} **{theirs.top(m)[0]}** ({theirs.top(m)[1]:.0%})" for m, title in
                         (("stage1", "stage one"), ("adam", "Adam head"), ("sgd", "SGD head")))
    if selection.unsure():
        why = (f"**The model chooser is unsure which model this photo is for** ({said}; it is sure above "
               f"{UNSURE:.0%}), so the answer below may come from a model that does not know this kind of photo.")
    else:
        why = f"The model chooser assigned this photo to the **{choices[other].title}** model ({said})."
    st.warning(f"{why} The **{choices[other].title}** model's answer: {answers}.", icon=":material/help:")


def show_prediction(pred, name: str) -> None:
    from core.protocol.vocabulary import METHODS, method_title

    st.markdown(f"#### Predictions for *{name}*")
    cols = st.columns(len(METHODS))
    for col, method in zip(cols, METHODS):
        label, p = pred.top(method)
        with col:
            st.metric(method_title(method), breakable(label))
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
        st.write("One model with three outputs, in this order and named so in both files: `stage_one` (stage "
                 "one's class probabilities), then `stage_two_adam` and `stage_two_sgd` (the Adam head's and the "
                 "SGD head's). Input: a batch of "
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


def answer(data: bytes, name: str, choices, pick: int, models, invert, selection: Preselection | None,
           max_pixels: int) -> None:
    """The probabilities first (fast), then the out-of-distribution verdict's details and the heat map. The
    preselection's pass already holds the answer of a shipped model read with the automatic inversion."""
    from core.classify.classify import classify
    from core.data.imageio import ImageError

    measured = selection.predictions[pick] if selection is not None and invert is None else None
    started = time.perf_counter()
    try:
        pred = measured or classify(models, data, invert=invert, max_pixels=max_pixels)
    except ImageError as exc:
        st.error(f"Could not use this file: {exc}")
        return
    answer_s = time.perf_counter() - started
    ood_warning(pred, choices[pick], choices, selection, pick, models.ood_problem)
    second_opinion(choices, selection, pick)
    show_prediction(pred, name)
    heat_s = show_input_and_heat_map(pred, models)
    shipped = sum(p is not None for p in selection.predictions) if selection is not None else 0
    fit_s = selection.seconds if selection is not None else 0.0
    st.caption(("Answer from the preselection's pass" if measured else f"Answer in {1000 * answer_s:.0f} ms")
               + f", heat map in {1000 * heat_s:.0f} ms; measuring the photo against "
               f"{count_text(shipped, 'shipped model')} to preselect one took {1000 * fit_s:.0f} ms when it was "
               "uploaded (this server).")


def body() -> None:
    from core.classify.ood import what_it_knows
    from core.data.imageio import ImageError

    st.title("Classify")
    st.write("Upload a photo (or take one): it is decoded by the same function that reads the datasets, resized to "
             "the model's input, and classified by the stage-one CNN and by both stage-two heads on that CNN's "
             "features. The model preselected is the shipped one that a small model chooser, fitted on the "
             "shipped models' features of images from each dataset, assigns the photo to. It is usually right, "
             "not always (docs/pages.md, \"Classify\", says how often), so check the Model box.")
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
        data = None  # the Model box and the downloads stay
    selection, new_photo = None, False
    if data is not None:
        try:
            selection, new_photo = measure_photo(choices, data, lim.max_pixels)
        except ImageError as exc:
            st.error(f"Could not use this file: {exc}")
            data = None
    pick_default(choices, selection, new_photo)
    pick = st.selectbox("Model", list(range(len(choices))), format_func=lambda i: choices[i].label, key=MODEL_KEY)
    route_caption(choices, selection.route if selection is not None else None)
    choice = choices[pick]
    models = load_choice(choice)
    st.caption(f"{choice.title or choice.dataset}: knows {what_it_knows(choice.dataset, choice.class_names)} · "
               f"input {'×'.join(map(str, models.input_shape))} · classes: {', '.join(models.class_names)}")
    invert = None
    if models.channels == 1:
        invert = INVERT[st.radio("Fashion-MNIST items are light on a dark background; a photo of a dark item on a "
                                 "light background is inverted", list(INVERT), horizontal=True)]
    if data is not None:
        answer(data, name, choices, pick, models, invert, selection, lim.max_pixels)
    export_downloads(choice, models, lim.demo)


guard(body)
