"""Reading a reference set (CSV or Parquet) into a frame."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from monitor.errors import MonitorError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["read_reference", "reference_columns"]


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


def reference_columns(path: str | Path) -> list[str]:
    """The columns of a reference set, read from its header alone (a Parquet file's
    schema, a CSV file's first line); a ``MonitorError`` naming the file when it cannot be
    read, is a folder, or is of an unknown type."""
    import csv
    import gzip

    path = Path(path)
    if path.is_dir():
        raise MonitorError(f"{path}: is a directory; the reference set is one CSV or "
                           "Parquet file")
    if not path.exists():
        raise MonitorError(f"{path}: reference set not found")
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    try:
        if kind in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return [str(name) for name in pq.read_schema(path).names]
        if kind == ".csv":
            opener = gzip.open if path.suffix.lower() == ".gz" else open
            with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
                return next(csv.reader(handle), [])
    except Exception as exc:
        raise MonitorError(f"{path}: cannot read the reference set: {exc}") from None
    raise MonitorError(f"{path}: unknown file type; use .csv or .parquet")
