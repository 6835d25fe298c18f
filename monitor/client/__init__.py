"""Serving-side SDK. Imports only the standard library, so that it loads in milliseconds;
database drivers are loaded lazily, in the background thread that writes.
"""

from monitor.client.logger import InferenceLogger

__all__ = ["InferenceLogger"]
