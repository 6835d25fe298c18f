"""The dashboard's pages, its URL state (``?model=...&run=...&days=...``) and links.

A view is fully described by its URL, so a link opens the same view for anyone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

__all__ = [
    "PAGES",
    "RANGES",
    "follow_deep_link",
    "int_param",
    "link",
    "open_model",
    "open_run",
    "param",
    "selected",
    "utc_text",
]

# Page name (also its URL path) -> script, relative to app.py.
PAGES = {
    "overview": "views/overview.py",
    "model": "views/model.py",
    "run": "views/run.py",
    "fallback": "views/fallback.py",
}
# The model page's time ranges: label -> days before the newest window (None: all).
RANGES: dict[str, int | None] = {"7 days": 7, "30 days": 30, "90 days": 90, "1 year": 365,
                                 "all": None}


def param(name: str) -> str | None:
    value = st.query_params.get(name)
    return value or None


def int_param(name: str) -> int | None:
    value = param(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def link(page: str, **params: object) -> str:
    """A relative link to ``page`` with ``params`` (None values left out)."""
    query = urlencode({k: str(v) for k, v in params.items() if v is not None})
    return f"{page}?{query}" if query else page


def open_run(model: str, run_id: int) -> NoReturn:
    st.switch_page(PAGES["run"], query_params={"model": model, "run": str(run_id)})


def open_model(model: str) -> NoReturn:
    st.switch_page(PAGES["model"], query_params={"model": model})


def follow_deep_link(page: Any) -> None:
    """At the root, ``?model=M&run=ID`` opens that run and ``?model=M`` the model page
    (the overview itself takes no parameters)."""
    if getattr(page, "url_path", None) not in ("", "overview"):
        return
    model, run = param("model"), int_param("run")
    if run is not None:
        query: dict[str, str] = {"run": str(run)}
        if model:
            query["model"] = model
        st.switch_page(PAGES["run"], query_params=query)
    if model:
        query = {"model": model}
        if param("days"):
            query["days"] = str(param("days"))
        st.switch_page(PAGES["model"], query_params=query)


def selected(event: Any, name: str) -> dict[str, Any] | None:
    """The first point of chart selection ``name`` in an ``on_select`` event, if any."""
    try:
        points = event.selection[name]
    except (AttributeError, KeyError, TypeError):
        return None
    if isinstance(points, list) and points and isinstance(points[0], dict):
        return points[0]
    return None


def utc_text(value: datetime | pd.Timestamp | str | None, *, seconds: bool = False) -> str:
    """'2026-10-09 00:00 UTC'; an empty text for None."""
    if value is None or (isinstance(value, float)) or value is pd.NaT:
        return ""
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        return ""
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")
