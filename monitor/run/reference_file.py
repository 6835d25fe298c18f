"""Reading a reference set (CSV or Parquet) into a frame."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from monitor.errors import MonitorError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["read_reference"]


def read_reference(path: str | Path) -> pd.DataFrame:
    """The reference frame; raise a ``MonitorError`` naming the file when it cannot be read."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise MonitorError(f"{path}: reference set not found")
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    try:
        if kind in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if kind == ".csv":
            # round_trip keeps floats exact, so statistics match the file bit for bit.
            return pd.read_csv(path, float_precision="round_trip")
    except Exception as exc:
        raise MonitorError(f"{path}: cannot read the reference set: {exc}") from None
    raise MonitorError(f"{path}: unknown file type; use .csv or .parquet")
