"""mqm's Streamlit quality dashboard (``mqm dashboard``): pages over the store's read API.

Importing the package does nothing; ``app.py`` is the entry point Streamlit runs.
"""

__all__: list[str] = []
