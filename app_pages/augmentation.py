"""Augmentation: one image through the paper's augmentation (the model's own layers), many seeded variants."""

from __future__ import annotations

import streamlit as st

from core.protocol.vocabulary import dataset_title
from ui.common import data_path, guard, limits

SOURCES = ("Built-in test picture", "Fashion-MNIST sample", "Dogs & Cats sample", "Face Mask sample",
           "Upload an image")


@st.cache_data(show_spinner=False, max_entries=32)
def variants(image_bytes: bytes, shape: tuple[int, ...], rotation: float, zoom: float, shift: float,
             flip: bool, fill_mode: str, n: int, seed: int):
    import numpy as np

    from core.protocol.config import Augmentation
    from core.app.preview import augment_variants

    image = np.frombuffer(image_bytes, dtype=np.uint8).reshape(shape)
    aug = Augmentation(rotation_deg=rotation, zoom=zoom, shift=shift, horizontal_flip=flip, fill_mode=fill_mode)
    return augment_variants(image, aug, n=n, seed=seed)


@st.cache_data(show_spinner=False, max_entries=8)
def dataset_image(dataset: str, path: str | None, index: int):
    from core.app import preview

    if dataset == "fashion-mnist":
        names, grid = preview.keras_samples(dataset, None, 1, seed=index)
    else:
        names, grid = preview.folder_samples(path, 1, size=128, seed=index)
    label = index % len(names)
    return grid[label][0], names[label]


def source_image():
    """The chosen source image (uint8 HxWxC) and a caption, or (None, why)."""
    import numpy as np

    from core.app import preview
    from core.data.imageio import ImageError, decode_image

    source = st.radio("Image", SOURCES, horizontal=True)
    if source == SOURCES[0]:
        return preview.demo_image(), "built-in test picture (160x160)"
    if source == SOURCES[-1]:
        lim = limits()
        up = st.file_uploader(f"An image (JPEG or PNG; up to {lim.max_upload_mb} MB)", type=["jpg", "jpeg", "png", "webp", "bmp"],
                              max_upload_size=lim.max_upload_mb)
        if up is None:
            return None, "Upload an image to see it augmented."
        data = up.getvalue()
        if len(data) > lim.max_upload_mb * 1024 * 1024:  # the widget's limit is the browser's; check here too
            st.error(f"The file is larger than {lim.max_upload_mb} MB.")
            return None, "Upload a smaller image to see it augmented."
        try:
            return decode_image(data, size=128, max_pixels=lim.max_pixels), f"{up.name}, resized to 128x128"
        except ImageError as exc:
            st.error(f"Could not use this file: {exc}")
            return None, "Upload another image to see it augmented."
    dataset = {SOURCES[1]: "fashion-mnist", SOURCES[2]: "dogs-cats", SOURCES[3]: "face-mask"}[source]
    if dataset == "fashion-mnist":
        if not preview.local_source("fashion-mnist"):
            return None, "Fashion-MNIST is not installed here (see the Datasets page)."
        path = None
    else:
        path = data_path(dataset)
        if not path:
            return None, "Point at this dataset's folder on the Datasets page first."
    index = st.number_input("Sample number", 0, 10_000, 0, 1)
    image, label = dataset_image(dataset, path, int(index))
    return np.asarray(image), f"{dataset_title(dataset)} sample ({label})"


def _next_seed() -> None:
    st.session_state["aug_seed"] = int(st.session_state.get("aug_seed", 0)) + 1


def body() -> None:
    import numpy as np

    from core.protocol.config import Augmentation

    st.title("Augmentation")
    default = Augmentation()
    st.write("The paper augments the photo datasets with Keras' ImageDataGenerator: rotation "
             f"±{default.rotation_deg:g}°, zoom ±{default.zoom:g}, width/height shift ±{default.shift:g} and "
             "horizontal flips. Here the same ranges run through the exact preprocessing layers the stage-one "
             "model starts with (active only while training). The same seed always gives the same variants.")
    image, caption = source_image()
    c = st.columns(5)
    rotation = c[0].slider("rotation (°)", 0.0, 180.0, float(default.rotation_deg), 1.0)
    zoom = c[1].slider("zoom (±)", 0.0, 0.9, float(default.zoom), 0.05)
    shift = c[2].slider("shift (± fraction)", 0.0, 0.9, float(default.shift), 0.05)
    fill_mode = c[3].selectbox("fill mode", ["nearest", "reflect", "constant", "wrap"],
                               help="ImageDataGenerator's default is 'nearest'.")
    flip = c[4].checkbox("horizontal flip", value=default.horizontal_flip)
    c2 = st.columns([1, 1, 2])
    n = c2[0].slider("variants", 4, 32, 12, 4)
    if "aug_seed" not in st.session_state:
        st.session_state["aug_seed"] = 0
    c2[1].number_input("seed", 0, 1_000_000, key="aug_seed")
    c2[2].button("Regenerate (next seed)", icon=":material/casino:", on_click=_next_seed)
    if image is None:
        st.info(caption)
        return
    image = np.ascontiguousarray(image, dtype=np.uint8)
    out = variants(image.tobytes(), image.shape, rotation, zoom, shift, flip, fill_mode, n,
                   int(st.session_state["aug_seed"]))
    width = 112 if image.shape[0] <= 32 else 150
    left, right = st.columns([1, 5])
    left.image(image if image.shape[-1] == 3 else image[..., 0], caption=f"original: {caption}", width=width)
    with right:
        per_row = 6
        for start in range(0, len(out), per_row):
            cols = st.columns(per_row)
            for col, img in zip(cols, out[start:start + per_row]):
                col.image(img if img.shape[-1] == 3 else img[..., 0], width=width)
    st.caption(f"{len(out)} variants, seed {st.session_state['aug_seed']}: rotation ±{rotation:g}°, zoom "
               f"±{zoom:g}, shift ±{shift:g}, flip {'on' if flip else 'off'}, fill '{fill_mode}'.")


guard(body)
