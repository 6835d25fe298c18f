"""The flag document as a file per model, for sidecar setups: replaced atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_flag_file"]


def write_flag_file(directory: Path, document: dict[str, Any]) -> bool:
    """Write ``<directory>/<model>.json`` atomically unless it already holds ``document``;
    return whether it was written.

    A temporary file in the same folder, flushed to disk, then ``os.replace``: a reader
    sees the old document or the new one, never a part.
    """
    path = directory / f"{document['model']}.json"
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{document['model']}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes it private (0600); a sidecar may run as another user.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


