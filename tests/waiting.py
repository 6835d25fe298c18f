"""Polling for what another thread or process reaches, shared by the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_until(condition: Callable[[], Any], what: str, limit: float = 15.0,
               every: float = 0.01) -> Any:
    """Poll ``condition`` until it is truthy and return its value; the limit only stops a
    hung test (it measures nothing)."""
    deadline = time.monotonic() + limit
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(every)
    return value
