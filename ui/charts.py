"""Plotly figures of the Results page, built from plain frames and arrays so tests can check them directly.

Kept apart from the pages because each figure encodes a reading choice worth testing: Figure 16 colours every
segment by its own comparison, and the confusion matrix is drawn as one clickable marker per cell (Streamlit's
``on_select`` reports clicks on scatter points, not on heatmap cells).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.protocol.vocabulary import HEAD_NAMES, HEADS, METHODS

GAIN_COLORS = {"up": "#2ca02c", "down": "#d62728", "same": "#7f7f7f"}
HEAD_TITLES = dict(HEAD_NAMES)
"""Figure 16's panel titles: the head alone (each panel's axis already reads stage one → head); "stage one →
Adam head" beside "stage one → SGD head" overlapped on a 390 px phone, where a panel is about 160 px wide."""


def gain_color(gain: float) -> str:
    """Green when the head beat stage one in that repeat, red when it did worse, grey for a tie."""
    return GAIN_COLORS["up" if gain > 0 else ("down" if gain < 0 else "same")]


def figure16(frame: pd.DataFrame, stage1_name: str = "stage one"):
    """The paper's Figure 16: per repeat, stage one's test accuracy joined to each head's.

    One panel per head, so every segment is one comparison and is coloured by that comparison's own gain
    (the SGD segment by the SGD head's gain, not the Adam head's). ``frame`` is :func:`core.results.stats.runs_frame`;
    ``stage1_name`` labels stage one's axis point (which reading of it the frame holds).
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[HEAD_TITLES[h] for h in HEADS])
    for col, head in enumerate(HEADS, start=1):
        xs = [stage1_name, HEAD_NAMES[head]]
        for _, row in frame.iterrows():
            ys = [row["stage1_test_accuracy"], row[f"{head}_test_accuracy"]]
            gain = ys[1] - ys[0]
            label = f"repeat {int(row['repeat']) + 1}"
            fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=label, legendgroup=label, showlegend=False,
                            line=dict(color=gain_color(gain), width=1.5), meta={"head": head, "gain": gain},
                            hovertemplate=f"{label}<br>%{{x}}: %{{y:.2%}}<br>gain {100 * gain:+.2f} pp"
                                          "<extra></extra>", row=1, col=col)
        if len(frame) < 2:
            continue  # the mean of one repeat is that repeat: its thick black line would hide it
        means = [frame["stage1_test_accuracy"].mean(), frame[f"{head}_test_accuracy"].mean()]
        fig.add_scatter(x=xs, y=means, mode="lines+markers", name="mean", showlegend=col == 1,
                        line=dict(color="black", width=4), meta={"head": head, "mean": True},
                        hovertemplate="mean<br>%{x}: %{y:.2%}<extra></extra>", row=1, col=col)
    for name, color in (("head better in that repeat", GAIN_COLORS["up"]),
                        ("head worse", GAIN_COLORS["down"]), ("tie", GAIN_COLORS["same"])):
        fig.add_scatter(x=[None], y=[None], mode="lines", name=name, line=dict(color=color, width=2),
                        meta={"legend": True}, row=1, col=1)  # legend keys only: no data
    values = frame[[f"{k}_test_accuracy" for k in METHODS]].to_numpy()
    span = float(values.max() - values.min()) if values.size else 1.0
    # ticks 0.1 pp apart need two decimals, or neighbouring labels read the same ("98.0 %", "98.0 %")
    fig.update_yaxes(tickformat=".2%" if span < 0.02 else ".1%", row=1, col=1, title_text="test accuracy")
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.2 if "<br>" in stage1_name else -0.12))  # below the label
    return fig


def confusion_figure(matrix: np.ndarray, class_names: list[str], selected: tuple[int, int] | None = None,
                     title: str = "", side: int = 360):
    """A confusion matrix (true class down, predicted across) coloured by the share of the true class each
    cell holds, with its count written in it, and the ``selected`` cell outlined.

    The colours are a heatmap; on top lies one invisible square marker per cell, in row-major order with
    ``customdata = [true, predicted]``, because Streamlit's ``on_select`` reports clicks on scatter points and
    not on heatmap cells (:func:`cell_from_selection` reads them back).
    """
    import plotly.graph_objects as go

    matrix = np.asarray(matrix)
    k = len(class_names)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    cell = max(16, min(90, int(side / k)))  # pixels per cell; ``side``: about the width of all cells
    fig = go.Figure(go.Heatmap(
        z=share, x=class_names, y=class_names, zmin=0, zmax=1, colorscale="Blues", showscale=False,
        text=matrix.astype(int), texttemplate="%{text}", textfont=dict(size=11 if k > 5 else 14),
        hoverinfo="skip", xgap=2, ygap=2))
    ii, jj = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    fig.add_scatter(x=[class_names[j] for j in jj], y=[class_names[i] for i in ii], mode="markers",
                    marker=dict(symbol="square", size=int(cell * 0.9), color="rgba(0,0,0,0)"),
                    unselected=dict(marker=dict(opacity=0)), selected=dict(marker=dict(opacity=0)),
                    customdata=np.column_stack([ii, jj]), text=[str(int(matrix[i, j])) for i, j in zip(ii, jj)],
                    hovertemplate="true %{y}<br>predicted %{x}<br>%{text} image(s)<extra></extra>",
                    showlegend=False)
    if selected is not None:
        i, j = selected
        fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                      line=dict(color="#d62728", width=3))
    labels = 8 * max(len(n) for n in class_names) + 50
    fig.update_layout(height=90 + k * cell, width=labels + k * cell + 30,
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10), title=title,
                      xaxis=dict(title="predicted", side="top", type="category", showgrid=False, zeroline=False),
                      yaxis=dict(title="true", type="category", autorange="reversed", showgrid=False,
                                 zeroline=False),
                      plot_bgcolor="white", clickmode="event+select", dragmode=False)
    return fig


def cell_from_selection(selection: Any, class_names: list[str]) -> tuple[int, int] | None:
    """The ``(true, predicted)`` cell of a confusion-matrix click (a Plotly selection state), or None.

    Read from the clicked point's category labels (``x`` predicted, ``y`` true), else from its index in the
    row-major marker order of :func:`confusion_figure`.
    """
    try:
        points = selection["selection"]["points"] if "selection" in selection else selection["points"]
    except (KeyError, TypeError):
        return None
    k = len(class_names)
    for point in points or []:
        x, y = point.get("x"), point.get("y")
        if x in class_names and y in class_names:
            return class_names.index(y), class_names.index(x)
        index = point.get("point_index", point.get("point_number"))
        if isinstance(index, int) and 0 <= index < k * k:
            return divmod(index, k)
    return None


def curves_figure(history: Any, title: str = ""):
    """Train/validation accuracy and loss per epoch (the paper's Figure 15), from a per-epoch row list or a
    column dict (``{"epoch": [...], "accuracy": [...], ...}``)."""
    from plotly.subplots import make_subplots

    frame = pd.DataFrame(history)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "loss"))
    if frame.empty or "epoch" not in frame:
        fig.update_layout(height=300, title=title or "no epochs yet")
        return fig
    styles = {"accuracy": ("train", "#1f77b4", 1), "val_accuracy": ("validation", "#ff7f0e", 1),
              "loss": ("train", "#1f77b4", 2), "val_loss": ("validation", "#ff7f0e", 2)}
    for column, (name, color, col) in styles.items():
        if column in frame:
            fig.add_scatter(x=frame["epoch"], y=frame[column], mode="lines+markers", name=name,
                            line=dict(color=color), legendgroup=name, showlegend=col == 1, row=1, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1 if len(frame) <= 20 else None)
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=50, b=10), title=title,
                      legend=dict(orientation="h", y=-0.25))
    return fig
