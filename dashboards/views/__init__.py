"""The dashboard's pages: scripts that ``app.py`` hands to ``st.navigation``.

Not named ``pages/``: Streamlit would take such a folder for its older automatic
multipage mode and could run a page without ``app.py`` around it.
"""

__all__: list[str] = []
