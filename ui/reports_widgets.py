"""Page helpers for the related reports: plotting a sweep with error bars (queueing one is
:func:`ui.jobs.submit` with ``sweep=``).

Kept apart from :mod:`ui.common` (shared by every page); this module adds what only the reports page needs.
"""

from __future__ import annotations

import math
from typing import Any

from core.protocol.vocabulary import HEAD_NAMES, METHODS, STAGE_ONE
from core.protocol.words import count_text

METHOD_COLOURS = {"stage1": "#1f77b4", "adam": "#2ca02c", "sgd": "#ff7f0e"}
METHOD_NAMES = {"stage1": f"{STAGE_ONE} (the report's model)",
                **{h: f"+ second stage, {name}" for h, name in HEAD_NAMES.items()}}
"""The methods as the Related reports page names them: stage one is the report's own model, not the paper's CNN."""


def sweep_figure(frame: Any, param: str, published: list[tuple[Any, float]], report_id: str, title: str = ""):
    """Test accuracy against the swept value: ours per method with ±1 standard deviation error bars (over
    repeats), and the report's published points where it gives them. A log axis for learning rates."""
    import plotly.graph_objects as go

    fig = go.Figure()
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in frame["value"])
    for method in METHODS:
        part = frame[frame["method"] == method]
        if part.empty:
            continue
        std = [0.0 if not math.isfinite(s) else 100 * s for s in part["test std"]]
        fig.add_scatter(x=list(part["value"] if numeric else part["value"].map(str)),
                        y=list(100 * part["test mean"]), mode="lines+markers", name=METHOD_NAMES[method],
                        line=dict(color=METHOD_COLOURS[method]),
                        error_y=dict(type="data", array=std, visible=True),
                        customdata=[count_text(int(n), "repeat") for n in part["repeats"]],
                        hovertemplate="%{x}: %{y:.2f}% (%{customdata})<extra></extra>")
    if published:
        fig.add_scatter(x=[v if numeric else str(v) for v, _ in published], y=[100 * a for _, a in published],
                        mode="markers", name=f"report {report_id} (published)",
                        marker=dict(symbol="x", size=11, color="#d62728"))
    log = numeric and param == "learning_rate"
    fig.update_xaxes(title_text=param, type="log" if log else None, exponentformat="e" if log else None)
    fig.update_yaxes(title_text="test accuracy (%)")
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=40, b=10), title=title,
                      legend=dict(orientation="h", y=-0.3))
    return fig


def confusion_figure(matrix: Any, names: list[str], title: str):
    """A confusion-matrix heatmap (rows: true class, columns: predicted)."""
    import plotly.express as px

    fig = px.imshow(matrix, x=names, y=names, text_auto=True, color_continuous_scale="Blues",
                    labels=dict(x="predicted", y="true", color="images"), title=title)
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10), coloraxis_showscale=False)
    return fig
