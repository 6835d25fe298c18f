"""Serving-side SDK. Imports only the standard library, so that it loads in milliseconds;
database drivers and ``urllib.request`` are loaded lazily, in the background threads that
need them.
"""

from monitor.client.flag import FallbackFlag, FlagState
from monitor.client.guard import Guarded, GuardLogger, guard
from monitor.client.logger import InferenceLogger, LoggerStats

__all__ = ["FallbackFlag", "FlagState", "GuardLogger", "Guarded", "InferenceLogger",
           "LoggerStats", "guard"]
