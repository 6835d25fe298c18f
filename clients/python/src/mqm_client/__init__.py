"""mqm's serving-side client: ``InferenceLogger``, ``FallbackFlag``, ``guard``.

A distribution of its own (``clients/python``, no dependencies) and part of the full mqm
install (also importable there as ``monitor.client``). Imports only the standard library,
so that it loads in milliseconds: what talking HTTP needs is loaded when a logger or a
flag is built (or by the flag's thread), and the database mode's SQLAlchemy and mqm store
by the logger's thread, with the full install only.
"""

from mqm_client.flag import FallbackFlag, FlagState
from mqm_client.guard import Guarded, GuardLogger, guard
from mqm_client.logger import InferenceLogger, LoggerStats

__all__ = ["FallbackFlag", "FlagState", "GuardLogger", "Guarded", "InferenceLogger",
           "LoggerStats", "guard"]
