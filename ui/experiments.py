"""Links to one experiment on the Results page (``/results?experiment=<id>``); the ids and labels themselves are
:mod:`core.app.catalog`'s."""

from __future__ import annotations

import streamlit as st

EXPERIMENT_PARAM = "experiment"
"""The query parameter of a deep link to one experiment on the Results page (``/results?experiment=<id>``)."""
RESULTS_PAGE = "app_pages/results.py"


def results_link(key: str | None, label: str, icon: str = ":material/table_chart:") -> None:
    """A link to the Results page that opens experiment ``key`` (a deep link), or the page as it is."""
    st.page_link(RESULTS_PAGE, label=label, icon=icon, query_params={EXPERIMENT_PARAM: key} if key else None)


def unknown_link(wanted: str) -> str:
    """The warning for a link whose ``?experiment=`` names nothing stored here. The id is shown cut to a
    few dozen characters: the query string is the visitor's, and a 10,000-character one was echoed whole."""
    from ui.format import short

    return f"The link names an experiment ({short(str(wanted), 40)}) that is not stored here; showing another."
