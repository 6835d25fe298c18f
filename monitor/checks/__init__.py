"""Checks: pure functions from frames and config to small typed results (no I/O)."""

__all__: list[str] = []
