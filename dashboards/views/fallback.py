"""Fallback: each model's flag as served, its audit trail, and manual overrides.

An override goes through ``monitor.fallback.flag.set_override``/``clear_override``, the
code path of ``mqm fallback set/clear``, after a confirmation step, and only for a user
who enters the service's API token (``MQM_API_TOKEN``, compared in constant time).
Without a token configured the page is read-only.
"""

from __future__ import annotations

import hmac
import os
from datetime import UTC, datetime

import streamlit as st

from dashboards import data, nav
from monitor.errors import MonitorError, RowProblem
from monitor.times import parse_until

ENV_TOKEN = "MQM_API_TOKEN"
PENDING = "pending_override"
DONE = "override_done"
ACTIONS = {"Force on": "on", "Force off": "off", "Clear the override": "clear"}

s = data.store()
models = list(s.config.models)
st.title("Fallback flag")
if not models:
    st.info("The config declares no models.")
    st.stop()
asked = nav.param("model")
if asked is not None and asked not in models:
    st.error(f"Unknown model {asked!r}; the config declares: {', '.join(models)}")
    st.stop()
model = st.selectbox("Model", models, index=models.index(asked) if asked else 0, key="model")
st.query_params["model"] = model

if DONE in st.session_state:
    st.success(st.session_state.pop(DONE))
    st.session_state["token"] = ""  # a token typed once is not left in the form

view = data.flag_view(model)
doc = view.document
cols = st.columns(4)
cols[0].metric("Flag", "ON" if doc["active"] else "off")
cols[1].metric("Source", doc["source"])
cols[2].metric("Since", nav.utc_text(doc["since"]) if doc["since"] else "never changed")
cols[3].metric("Stale", "yes" if doc["stale"] else "no",
               help="No successful check run taken in for longer than stale_after.")
st.markdown(f"**Reason:** {doc['reason'] or 'none recorded'}")
details = {
    "override expires": nav.utc_text(doc["expires_at"]) if doc["expires_at"] else "",
    "last successful run taken in": (nav.utc_text(doc["last_success_at"])
                                     if doc["last_success_at"] else "never"),
    "default prediction": repr(doc["default_prediction"]),
    "updated": nav.utc_text(doc["updated_at"]),
}
st.caption(" · ".join(f"{k}: {v}" for k, v in details.items() if v))
with st.expander("The flag document, as `GET /v1/models/{model}/fallback` serves it"):
    st.json(doc)

st.subheader("Audit trail")
if view.events.empty:
    st.info("No changes recorded yet.")
else:
    st.dataframe(view.events.assign(at=view.events["at"].map(nav.utc_text)),
                 hide_index=True, width="stretch", key="events",
                 column_config={"reason": st.column_config.TextColumn(width="large")})

st.subheader("Override")
token = os.environ.get(ENV_TOKEN) or ""
if not token:
    st.info(f"Read-only: {ENV_TOKEN} is not set in the dashboard's environment, so overrides "
            "cannot be made here. Start the dashboard with the same token as `mqm serve`, or "
            "use `mqm fallback set` / `mqm fallback clear`.")
    st.stop()


def token_ok(entered: str) -> bool:
    return hmac.compare_digest(entered.encode(), token.encode())


with st.form("override", clear_on_submit=False):
    action_label = st.radio("Action", list(ACTIONS), horizontal=True, key="action")
    until_text = st.text_input("Until", key="until",
                               placeholder="2h, 1d or 2026-10-14T08:00:00Z; empty: until "
                               "cleared", help="Ignored when clearing.")
    reason = st.text_input("Reason (for the audit trail)", key="reason")
    by = st.text_input("Who", key="by")
    entered = st.text_input("API token", type="password", key="token")
    review = st.form_submit_button("Review")

if review:
    st.session_state.pop(PENDING, None)
    action = ACTIONS[action_label]
    now = datetime.now(UTC)
    until = None
    problem = ""
    if not by.strip() or not reason.strip():
        problem = "Say who you are and why: both go into the audit trail."
    elif not entered or not token_ok(entered):
        problem = "Refused: the API token is wrong. Nothing was changed."
    elif action != "clear" and until_text.strip():
        try:
            until = parse_until("until", until_text.strip(), now)
        except RowProblem as exc:
            problem = f"Until: {exc}"
        else:
            if until <= now:
                problem = f"Until: {nav.utc_text(until)} is not in the future."
    if problem:
        st.error(problem)
    else:
        st.session_state[PENDING] = {"model": model, "action": action, "until": until,
                                     "reason": reason.strip(), "by": by.strip(),
                                     "token": entered}

pending = st.session_state.get(PENDING)
if pending and pending["model"] == model:
    if pending["action"] == "clear":
        what = f"clear the override of **{model}** (the automatic state is served again)"
    else:
        word = "ON" if pending["action"] == "on" else "OFF"
        until_word = (f"until {nav.utc_text(pending['until'])}" if pending["until"]
                      else "until cleared")
        what = f"force the flag of **{model}** {word} {until_word}"
    st.warning(f"Confirm: {what}; by {pending['by']}, because: {pending['reason']}")
    confirm_col, cancel_col = st.columns([1, 5])
    if confirm_col.button("Confirm", type="primary", key="confirm"):
        st.session_state.pop(PENDING)
        # The token is checked again at the write: the one gate that counts.
        if not token_ok(pending["token"]):
            st.error("Refused: the API token is wrong. Nothing was changed.")
        else:
            try:
                new = data.apply_override(model, action=pending["action"], by=pending["by"],
                                          reason=pending["reason"], until=pending["until"])
            except MonitorError as exc:
                st.error(f"Nothing was changed: {exc}")
            else:
                st.session_state[DONE] = (
                    f"Done: the flag of {model} is now {'ON' if new['active'] else 'off'} "
                    f"({new['source']}).")
                st.rerun()
    if cancel_col.button("Cancel", key="cancel"):
        st.session_state.pop(PENDING, None)
        st.rerun()
