"""Architectures: each dataset's stage-one CNN and the stage-two head, with the cut drawn where it is."""

from __future__ import annotations

import streamlit as st

from core.protocol.vocabulary import PAPER_DATASETS, dataset_title, is_photo_dataset
from ui.common import guard


# Shapes without the batch dimension and counts with separators, so every column, the parameter counts
# included, fits beside the diagram at 1280 px (they were cut off); a comment, not a docstring: Streamlit's
# magic would print a bare string on the page
LAYER_COLUMNS = {"output shape": st.column_config.TextColumn("output"),
                 "parameters": st.column_config.NumberColumn("parameters", format="localized")}


@st.cache_data(show_spinner="Building the model…", max_entries=16)
def info(dataset: str, augmented: bool):
    from core.app import preview

    return preview.architecture(dataset, augmented)


def layer_frame(rows: list[dict]):
    import pandas as pd

    from core.app.preview import shape_text

    frame = pd.DataFrame(rows)
    frame["output shape"] = frame["output shape"].map(shape_text)
    return frame


def body() -> None:
    import pandas as pd

    from core.app import preview

    st.title("Architectures")
    st.write("Stage one is a small CNN per dataset (from the paper's section 4 and the Kaggle models it cites). "
             "Stage two cuts it after the last hidden layer (red), feeds every image through the frozen part once, "
             "and trains a brand-new softmax model on those features — once with Adam, once with SGD + momentum.")
    c = st.columns([2, 1])
    dataset = c[0].radio("Dataset", PAPER_DATASETS, format_func=dataset_title, horizontal=True)
    augmented = c[1].toggle("with augmentation layers", value=is_photo_dataset(dataset),
                            help="The paper augments the photo datasets only; the layers are inactive at inference.")
    arch = info(dataset, augmented)
    m = st.columns(4)
    m[0].metric("input", "×".join(str(d) for d in arch["input_shape"]))
    m[1].metric("stage-one parameters", f"{arch['stage1_params']:,}")
    m[2].metric("features (cut width)", arch["feature_dim"])
    m[3].metric("stage-two parameters", f"{arch['head_params']:,}")

    left, right = st.columns([4, 5])
    with left:  # drawn at its own size (text at 13 pt), not shrunk to the column
        st.graphviz_chart(preview.architecture_dot(arch), width="content")
    with right:
        st.markdown("**Stage one, layer by layer**")
        rows = layer_frame(arch["rows"]).drop(columns=["part"])  # the colours say which part a layer is in
        cut = arch["cut_index"]

        def highlight(row):
            color = "background-color: #f9d6d5" if row.name == cut else (
                "color: #999999" if row.name > cut else "")
            return [color] * len(row)

        st.dataframe(rows.style.apply(highlight, axis=1), hide_index=True, height=35 * (len(rows) + 1) + 3,
                     column_config=LAYER_COLUMNS)
        st.caption(f"The cut is after layer **{rows.loc[cut, 'name']}** ({rows.loc[cut, 'type']}, "
                   f"{arch['feature_dim']} values). Layers above it ({arch['extractor_params']:,} parameters) "
                   "become the fixed feature extractor; the grey stage-one softmax is dropped.")
        st.markdown("**Stage two: the brand-new model**")
        st.dataframe(layer_frame(arch["head_rows"]), hide_index=True, column_config=LAYER_COLUMNS)
        st.caption(f"{arch['feature_dim']} × {arch['num_classes']} weights + {arch['num_classes']} biases = "
                   f"{arch['head_params']:,} parameters, trained twice (Adam; SGD with momentum).")


guard(body)
