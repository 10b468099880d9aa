"""The Results page's per-image evidence: a confusion matrix per method whose cells open their misclassified
test images, and the test images on which stage one and a second-stage head disagree.

Everything comes from the ``predictions`` block of the run records (:mod:`core.app.gallery` does the joins);
images are shown where the dataset is on this machine, names and probabilities otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from core.protocol.vocabulary import HEAD_NAMES, METHOD_NAMES
from core.protocol.words import count_text, repeat_name, repeats_named
from ui.charts import cell_from_selection, confusion_figure
from ui.format import pct, signed_pct

CELL_KEY = "cm_cell"
CHART_KEY = "cm_chart"
GRID_COLUMNS = 6
MAX_SHOWN = 18


# ------------------------------------------------------------------------------------- cached joins

def _stamp(runs: list[dict[str, Any]]) -> tuple:
    """What identifies a set of records for the caches below (hashing the records themselves costs more than
    the joins they save)."""
    return tuple((r["key"], r["repeat"], r.get("finished_at")) for r in runs)


@st.cache_data(max_entries=8, show_spinner=False)
def _changes(stamp: tuple, head: str, _runs: list[dict[str, Any]]):
    from core.app import gallery

    return gallery.changes(_runs, head)


# ------------------------------------------------------------------------------------- image grids

def _upscaled(img: np.ndarray) -> np.ndarray:
    """Small images (28x28, 32x32) enlarged with whole pixels, so they are not a blur."""
    factor = max(1, 112 // max(img.shape[:2]))
    if factor > 1:
        img = np.repeat(np.repeat(img, factor, axis=0), factor, axis=1)
    return img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img


def image_grid(frame, dataset: str, source: str | None, caption: Any) -> None:
    """Up to :data:`MAX_SHOWN` distinct images of ``frame`` (rows of :mod:`core.app.gallery`), each once, with
    ``caption(group)``; or a note that the images are not here."""
    from core.app import gallery

    if frame.empty:
        return
    if source is None:
        st.caption("The test images are not on this machine, so their names and probabilities are listed "
                   "instead (the table below).")
        return
    groups = list(frame.groupby("id", sort=False))
    shown = groups[:MAX_SHOWN]
    found = [(gallery.image(dataset, str(image_id), source), group) for image_id, group in shown]
    missing = sum(img is None for img, _ in found)
    found = [(img, group) for img, group in found if img is not None]
    for start in range(0, len(found), GRID_COLUMNS):  # one row of columns at a time keeps the rows aligned
        cols = st.columns(GRID_COLUMNS)
        for col, (img, group) in zip(cols, found[start:start + GRID_COLUMNS]):
            col.image(_upscaled(img), caption=caption(group), width="stretch")
    more = f"the first {len(shown)} of {len(groups):,} images" if len(groups) > len(shown) else \
        f"all {count_text(len(groups), 'image')}"
    if len(frame) > len(groups):  # the counts beside the choices are occurrences: say how the two relate
        more += (f" ({len(frame):,} occurrences: an image counted once per repeat it is in, shown here once "
                 "with its repeats)")
    note = f"Showing {more}, most confident first; every occurrence is in the table."
    if missing:
        note += f" {missing} could not be read from {source}."
    st.caption(note)


def _table(frame, columns: dict[str, str], percent: tuple[str, ...]) -> None:
    shown = frame[list(columns)].rename(columns=columns).copy()
    shown["repeat"] = shown["repeat"].map(lambda r: int(r) + 1)
    config = {columns[c]: st.column_config.NumberColumn(format="percent") for c in percent}
    st.dataframe(shown, hide_index=True, placeholder="–", column_config=config)


# --------------------------------------------------------------------------------- confusion matrices

def recorded_accuracy(runs: list[dict[str, Any]], method: str) -> float:
    """The mean test accuracy the records state for ``method`` (stage one under the weights its predictions
    were stored for): the number Tables 1-3 show, so the matrix's caption cannot differ from them in the last
    digit (the count-exact 0.64675 and the stored float32 0.6467499 round apart)."""
    from core.results import stats

    return float(np.mean([stats.metric(r, method, "test", r["predictions"]["stage1_weights"]
                                       if method == "stage1" else None) for r in runs]))


def cell_options(matrix: np.ndarray) -> list[str]:
    """Off-diagonal cells with mistakes in them, most mistakes first, as ``"true,pred"``."""
    k = len(matrix)
    cells = [(int(matrix[i, j]), i, j) for i in range(k) for j in range(k) if i != j and matrix[i, j] > 0]
    return [f"{i},{j}" for _, i, j in sorted(cells, key=lambda c: (-c[0], c[1], c[2]))]


def select_cell_from_chart() -> None:
    """``on_select`` callback of the matrix: a clicked off-diagonal cell becomes the chosen cell (the same
    state the cell selectbox holds, so a click and a choice in the list do the same thing)."""
    cell = cell_from_selection(st.session_state.get(CHART_KEY) or {}, st.session_state.get("cm_names", []))
    if cell is None:
        return
    if cell[0] == cell[1]:
        st.session_state["cm_note"] = "That cell holds the correct answers; click a cell off the diagonal."
        return
    value = f"{cell[0]},{cell[1]}"
    if value in st.session_state.get("cm_cell_options", []):
        st.session_state[CELL_KEY] = value
        st.session_state.pop("cm_note", None)
    else:
        st.session_state["cm_note"] = "No image falls in that cell."


def confusion_section(runs: list[dict[str, Any]]) -> None:
    from core.app import gallery
    from core.results import metrics

    st.markdown("#### Which images each method gets wrong")
    usable = gallery.with_predictions(runs)
    if not usable:
        st.info("These records were made before per-image test predictions were stored, so there is no confusion "
                "matrix for this experiment; runs made now store them.")
        return
    names = usable[0]["dataset"]["class_names"]
    c = st.columns([3, 2])
    method = c[0].radio("Method", list(METHOD_NAMES), format_func=METHOD_NAMES.get, horizontal=True,
                        key="cm_method")
    scopes = ["all"] + [int(r["repeat"]) for r in usable]
    scope = c[1].selectbox("Repeats", scopes, key="cm_scope",
                           format_func=lambda s: f"all {len(usable)}, summed" if s == "all" else repeat_name(s),
                           help="Sum the test-set confusion matrices of every repeat that stored predictions, "
                                "or look at one repeat.")
    chosen = usable if scope == "all" else [r for r in usable if int(r["repeat"]) == scope]
    matrix, count = metrics.experiment_confusion(chosen, method)
    covered = count_text(count, "repeat") + (f" of {len(runs)}" if len(runs) != count else "")
    old = len(runs) - len(usable)
    st.caption(f"{METHOD_NAMES[method]}, test set, {covered}"
               + (f"; {old} older record(s) predate per-image predictions and are not included" if old else "")
               + (f" · stage one under its reported ({usable[0]['predictions']['stage1_weights']}) weights"
                  if method == "stage1" else "") + ". Click a cell (or pick it in the list) to see its images.")
    options = cell_options(matrix)
    st.session_state["cm_cell_options"] = options
    st.session_state["cm_names"] = list(names)
    if st.session_state.get(CELL_KEY) not in options:
        st.session_state[CELL_KEY] = options[0] if options else None
    # few classes: the per-class table beside the matrix; many: below it, at full width
    left, right = st.columns([1, 1]) if len(names) <= 4 else (st.container(), st.container())
    with left:
        selected = tuple(int(v) for v in st.session_state[CELL_KEY].split(",")) if options else None
        figure = confusion_figure(matrix, names, selected, side=360 if len(names) <= 4 else 520)
        st.plotly_chart(figure, key=CHART_KEY, on_select=select_cell_from_chart, selection_mode="points",
                        width="content", config={"displayModeBar": False})
        st.caption("Rows: true class; columns: predicted. Darker = a larger share of the true class.")
    with right:
        table = metrics.per_class(matrix, names, count)
        for col in ("precision", "recall", "F1"):
            table[col] = table[col].map(lambda v: pct(v, 1))
        st.dataframe(table, placeholder="–", height="content")  # all rows: ten classes hid the macro average
        st.caption(f"Accuracy {pct(recorded_accuracy(chosen, method))}; the macro average is the plain mean over "
                   "classes; support: test images of the class in one repeat"
                   + (f" (the rates are pooled over the {count} repeats)." if count > 1 else "."))
    if st.session_state.get("cm_note"):
        st.caption(st.session_state.pop("cm_note"))
    if not options:
        st.success("No misclassified test image in this selection.")
        return

    def cell_label(value: str) -> str:
        i, j = (int(v) for v in value.split(","))
        return f"{names[i]} → {names[j]} ({int(matrix[i, j])})"

    value = st.selectbox("Misclassified cell (true → predicted)", options, key=CELL_KEY, format_func=cell_label)
    i, j = (int(v) for v in value.split(","))
    frame = gallery.cell_images(chosen, method, i, j)
    st.markdown(f"**{count_text(int(matrix[i, j]), 'test image')} of *{names[i]}* that {METHOD_NAMES[method]} called "
                f"*{names[j]}***")
    image_grid(frame, usable[0]["dataset"]["name"], gallery.image_source(usable[0]),
               lambda g: f"{names[j]} {pct(g['p predicted'].mean(), 0)} · {names[i]} "
                         f"{pct(g['p true'].mean(), 0)} · {repeats_named(g['repeat'], most=6)}")
    with st.expander(f"All {count_text(len(frame), 'occurrence')}, with probabilities"):
        _table(frame, {"repeat": "repeat", "id": "image", "true": "true", "predicted": "predicted",
                       "p predicted": "P(predicted)", "p true": "P(true)"}, ("p predicted", "p true"))


# ---------------------------------------------------------------------------------- what changed

def changes_section(runs: list[dict[str, Any]], bn_layers: int) -> None:
    from core.app import gallery

    st.markdown("#### What the second stage changed, image by image")
    usable = gallery.with_predictions(runs)
    if not usable:
        st.info("These records predate per-image predictions, so the changed images cannot be listed.")
        return
    c = st.columns([2, 3])
    head = c[0].radio("Head", list(HEAD_NAMES), format_func=HEAD_NAMES.get, horizontal=True, key="chg_head")
    frame = _changes(_stamp(usable), head, usable)
    summary = gallery.change_summary(usable, head, frame)
    fixed, broken = summary["fixed"], summary["broken"]
    m = st.columns(4)
    m[0].metric("Fixed by the head", fixed, help="Stage one wrong, the head right.")
    m[1].metric("Broken by the head", broken, help="Stage one right, the head wrong.")
    m[2].metric("Net gain", signed_pct(summary["gain"]), help="(fixed - broken) / test images: exactly the "
                "head's mean accuracy gain over these repeats.")
    if bn_layers:
        m[3].metric("Fixed by BN alone too", f"{summary['fixed_by_bn']} of {fixed}",
                    help="Of the images the head fixes, how many stage one already gets right once its "
                         "BatchNorm statistics are re-estimated (same weights, no retraining).")
    else:
        m[3].metric("Fixed by best checkpoint too", f"{summary['fixed_by_best']} of {fixed}",
                    help="This model has no BatchNorm layer. Of the images the head fixes, how many stage one's "
                         "best checkpoint already gets right.")
    st.caption(f"Over {count_text(summary['repeats'], 'repeat')} with predictions ({summary['test_images']:,} test "
               f"predictions), the {HEAD_NAMES[head]} and stage one disagree on {len(frame)}: "
               f"{fixed} fixed, {broken} broken, {summary['both_wrong']} both wrong with different answers. "
               f"Net {summary['net']:+d} images = {signed_pct(summary['gain'])}, the head's mean gain. "
               + (f"Re-estimating BatchNorm alone fixes {summary['fixed_by_bn']} of the {fixed} fixed images; "
                  f"the best checkpoint alone {summary['fixed_by_best']}." if bn_layers else
                  f"The best checkpoint alone fixes {summary['fixed_by_best']} of the {fixed}."))
    counts = frame["outcome"].value_counts()
    outcome = c[1].radio("Show", list(gallery.OUTCOMES), horizontal=True, key="chg_outcome",
                         format_func=lambda o: f"{o} ({int(counts.get(o, 0))})")
    part = frame[frame["outcome"] == outcome].sort_values("p stage one" if outcome != "broken" else "p head",
                                                         ascending=False)
    if part.empty:
        st.caption(f"No image is {gallery.OUTCOMES[outcome]} here.")
        return
    fix_flag = "BN alone" if bn_layers else "best alone"
    fix_word = "BN" if bn_layers else "best ckpt"
    image_grid(part, usable[0]["dataset"]["name"], gallery.image_source(usable[0]),
               lambda g: (f"CNN {g['stage one'].iloc[0]} {pct(g['p stage one'].mean(), 0)} → "
                          f"{g['head'].iloc[0]} {pct(g['p head'].mean(), 0)}"
                          + (f" · {fix_word} ✓" if g[fix_flag].all() else "")
                          + f" · {repeats_named(g['repeat'], most=6)}"))
    if outcome == "fixed":
        st.caption(f"✓ {'BN' if bn_layers else 'best ckpt'}: stage one alone gets this image right with "
                   + ("its BatchNorm statistics re-estimated." if bn_layers else "its best checkpoint."))
    with st.expander(f"All {len(part)} {gallery.OUTCOMES[outcome]} occurrence(s), with probabilities"):
        _table(part, {"repeat": "repeat", "id": "image", "true": "true", "stage one": "stage one says",
                      "p stage one": "P(stage one)", "head": "head says", "p head": "P(head)",
                      "BN alone": "BN re-estimated right", "best alone": "best checkpoint right"},
               ("p stage one", "p head"))
