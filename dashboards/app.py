"""mqm's quality dashboard. Start it with ``mqm dashboard`` (or ``streamlit run
dashboards/app.py`` with ``MQM_CONFIG`` set); see the README's "Dashboard" section."""

from __future__ import annotations

import streamlit as st

from dashboards.nav import PAGES, follow_deep_link
from monitor.errors import MonitorError

st.set_page_config(page_title="mqm: model quality", page_icon=":material/monitoring:",
                   layout="wide")

_TITLES = {
    "overview": ("Overview", ":material/dashboard:"),
    "model": ("Model", ":material/timeline:"),
    "run": ("Run", ":material/fact_check:"),
    "fallback": ("Fallback", ":material/emergency:"),
}
# Navigation on top: the pages' charts and tables get the whole width.
page = st.navigation([
    st.Page(PAGES[name], title=title, icon=icon, url_path=name, default=name == "overview")
    for name, (title, icon) in _TITLES.items()
], position="top")
follow_deep_link(page)
try:
    page.run()
except MonitorError as exc:
    # The config, the store, an unknown model: one message, no traceback.
    st.error(str(exc), icon=":material/error:")
