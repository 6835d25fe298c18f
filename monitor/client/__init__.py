"""The serving-side client, under the name mqm has always offered it.

The client's one source is the ``mqm_client`` package (``clients/python/``), which the full
mqm install ships too and which installs alone (``pip install clients/python``, standard
library only). ``monitor.client`` and its modules are the very same objects: code written
against either name works with the full install, and ``mqm_client`` with the client alone.
"""

import importlib
import sys

from mqm_client import (
    FallbackFlag,
    FlagState,
    Guarded,
    GuardLogger,
    InferenceLogger,
    LoggerStats,
    guard,
)

# ``import monitor.client.logger`` (and ``from monitor.client.flag import ...``) finds the
# client's own modules, not copies: one FallbackFlag class, one set of counters.
for _name in ("counters", "flag", "guard", "logger", "pool", "protocols"):
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(f"mqm_client.{_name}")

__all__ = ["FallbackFlag", "FlagState", "GuardLogger", "Guarded", "InferenceLogger",
           "LoggerStats", "guard"]
