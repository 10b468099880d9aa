"""The report app: ``streamlit run app.py``. Navigation and shared layout only; each page lives in app_pages/.

The folder is not called ``pages/``: that name is Streamlit's legacy multipage mechanism, which a server process
follows until ``st.navigation`` has run once in it, so a shared link opened on a fresh server would bypass the
navigation below (no page config, no sidebar). With no ``pages/`` folder there is only ``st.navigation``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import streamlit as st  # noqa: E402

from core.protocol.settings import apply_server_environment  # noqa: E402

apply_server_environment()  # before anything loads TensorFlow


def _copy_demo_secret() -> None:
    """A hosted deployment turns demo mode on with a ``TWO_STAGE_DEMO`` secret; core reads the environment."""
    try:
        if "TWO_STAGE_DEMO" in st.secrets:
            os.environ["TWO_STAGE_DEMO"] = str(st.secrets["TWO_STAGE_DEMO"])
    except Exception:  # noqa: BLE001 - no secrets file is the normal local case
        pass


_copy_demo_secret()
st.set_page_config(page_title="Two-stage CNN training, live", page_icon="🧪", layout="wide")

PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("app_pages/datasets.py", title="Datasets", icon=":material/dataset:"),
    st.Page("app_pages/augmentation.py", title="Augmentation", icon=":material/shuffle:"),
    st.Page("app_pages/architectures.py", title="Architectures", icon=":material/account_tree:"),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("app_pages/results.py", title="Results", icon=":material/table_chart:"),
    st.Page("app_pages/why.py", title="Why", icon=":material/psychology_alt:"),
    st.Page("app_pages/classify.py", title="Classify", icon=":material/photo_camera:"),
    st.Page("app_pages/reports.py", title="Related reports", icon=":material/library_books:"),
]
page = st.navigation(PAGES)

with st.sidebar:
    try:
        from core.protocol.settings import limits

        lim = limits()
        if lim.demo:
            st.info(f"**Demo mode.** Training is capped at {lim.max_train_images:,} images, "
                    f"{lim.max_epochs} epochs and {lim.max_repeats} repeats; uploads at {lim.max_upload_mb} MB. "
                    "Run the app locally for the full protocol.", icon=":material/info:")
        st.caption("Reproducing Zhou, *Image Classification by CNN with Two-stage Training*. "
                   "Paper numbers are labelled as such; every other number is from a run recorded here.")
    except Exception:  # noqa: BLE001 - the sidebar must never take the page down
        pass

page.run()
