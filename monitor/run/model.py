"""A model resolved once per run: its settings, contract, log source and reference.

Everything a run needs about a model is looked up here, once, and passed down as one
``ResolvedModel``; the contract is parsed once per process until its file changes
(``monitor.schema.load_schema``), and the reference figures are cached by content
(``monitor.run.reference``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING

from monitor.config import Config, ModelConfig
from monitor.errors import MonitorError
from monitor.schema import ModelSchema, load_schema
from monitor.store.sources import LogSource, make_source

if TYPE_CHECKING:
    from monitor.run.reference import ReferenceData
    from monitor.store.db import Engine

__all__ = ["ResolvedModel", "config_hash", "reference_version", "resolve"]


def config_hash(model_cfg: ModelConfig, schema: ModelSchema) -> str:
    """Identifies the settings a run used, so runs under other settings can be told apart.

    The fallback settings are left out: they act on runs, they do not shape them.
    """
    payload = json.dumps(
        {"model": model_cfg.model_dump(mode="json", exclude={"fallback"}),
         "schema": schema.model_dump(mode="json")},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@lru_cache(maxsize=32)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def reference_version(path: Path) -> str | None:
    """Content hash of the reference file (cached per size and mtime), or None if it is
    absent, not a file, or unreadable (``reference_problem`` says which)."""
    try:
        stat = path.stat()
        if not S_ISREG(stat.st_mode):
            return None
        return _file_digest(str(path), stat.st_size, stat.st_mtime_ns)
    except OSError:
        return None


def reference_problem(path: Path) -> str:
    """Why ``reference_version`` found no file to hash, naming the file."""
    if path.is_dir():
        return f"{path}: is a directory; the reference set is one CSV or Parquet file"
    if not path.exists():
        return f"{path}: reference set not found"
    return f"{path}: the reference set cannot be read"


@dataclass(frozen=True)
class ResolvedModel:
    """One model as a run sees it. The reference set is loaded on first use only (a
    schema-only run never needs it)."""

    name: str
    config: ModelConfig
    schema: ModelSchema
    source: LogSource
    # Where the reference profile is stored once built (None: built in memory only).
    engine: Engine | None = None

    @cached_property
    def config_hash(self) -> str:
        return config_hash(self.config, self.schema)

    @cached_property
    def reference_version(self) -> str | None:
        return reference_version(self.config.reference)

    @cached_property
    def _reference(self) -> tuple[ReferenceData | None, str | None]:
        from monitor.run.reference import load_reference_data

        version = self.reference_version
        if version is None:
            return None, reference_problem(self.config.reference)
        try:
            return load_reference_data(self.config, self.schema, version,
                                       engine=self.engine), None
        except MonitorError as exc:
            return None, str(exc)

    @property
    def reference(self) -> ReferenceData | None:
        """The cached reference figures; None when they cannot be had (see
        ``reference_error``): the run then records error sections."""
        return self._reference[0]

    @property
    def reference_error(self) -> str | None:
        return self._reference[1]

    @property
    def counts_fallbacks(self) -> bool:
        """Only mqm's own log table records why serving answered with its default."""
        return self.config.source.kind == "builtin"


def resolve(engine: Engine, config: Config, model: str) -> ResolvedModel:
    """Look the model up once: ``UnknownModelError`` for a model the config lacks,
    ``SchemaError`` for an unreadable contract."""
    model_cfg = config.model(model)
    schema = load_schema(model_cfg.schema_path)
    return ResolvedModel(name=model, config=model_cfg, schema=schema,
                         source=make_source(engine, model, model_cfg.source, schema),
                         engine=engine)
