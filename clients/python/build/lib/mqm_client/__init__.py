"""Serving-side SDK. Imports only the standard library, so that it loads in milliseconds;
database drivers and ``urllib.request`` are loaded lazily, in the background threads that
need them.
"""

from mqm_client.flag import FallbackFlag, FlagState
from mqm_client.guard import Guarded, GuardLogger, guard
from mqm_client.logger import InferenceLogger, LoggerStats

__all__ = ["FallbackFlag", "FlagState", "GuardLogger", "Guarded", "InferenceLogger",
           "LoggerStats", "guard"]
