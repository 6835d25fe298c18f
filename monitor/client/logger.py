"""``InferenceLogger``: records each prediction without slowing or breaking serving.

``log()`` only appends a tuple to a bounded queue (no I/O, no validation, no lock on
the caller's thread). A background thread validates and writes batches to the store.
When the queue is full (the database is slow or down), new entries are dropped and
counted instead of blocking the caller; pending entries are flushed at exit. An entry
that cannot be stored (a time in year 10**12, a number beyond a float, features nested
600 deep, a value the database refuses) is counted as invalid and skipped: it never
holds up the entries after it.

What can still make ``log()`` wait is the GIL: the writer runs Python, and CPython
hands the GIL over every 5 ms (``sys.getswitchinterval()``), or after a C call
returns. The writer's longest C call is the JSON encoding of one entry, which the row
limits of ``monitor.store.logs`` bound (1,000,000 characters, 100,000 values); a larger
entry is refused before it is encoded. The caller's own garbage collection passes are
the other source of a slow call, as for any allocation in the serving process.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any, TypedDict

__all__ = ["InferenceLogger", "LoggerStats"]

_log = logging.getLogger("mqm.client")

# One queued inference, as log() puts it on the queue (a plain tuple: the cheapest to
# build on the caller's thread): timestamp, request_id, features, prediction,
# probabilities, latency_ms, error, error_message, fallback_reason.
_Entry = tuple[float, str | None, Mapping[str, Any], Any, Mapping[Any, float] | None,
               float | None, bool, str | None, str | None]

# How often the writer looks at the queue: log() never wakes it (that would take a lock
# on the caller's thread). Soon again while entries arrive, less often when idle.
_BUSY_POLL = 0.005
_IDLE_POLL = 0.05


class LoggerStats(TypedDict):
    """``InferenceLogger.stats()``: a plain dict with these keys."""

    logged: int
    written: int
    dropped: int  # queue full, or the logger closed
    invalid: int
    write_failures: int
    queued: int
    last_error: str | None


class InferenceLogger:
    """Buffered, background writer of inference logs for one model.

    ``url`` is the monitor's database (default: ``MQM_DATABASE_URL``). Nothing here
    raises into the caller: failures are counted in ``stats()`` and logged at
    WARNING on the ``mqm.client`` logger.
    """

    def __init__(
        self,
        model: str,
        url: str | None = None,
        *,
        model_version: str | None = None,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        retry_interval: float = 2.0,
        exit_timeout: float = 5.0,
        features_only: bool = False,
    ) -> None:
        if not model:
            raise ValueError("model must be a non-empty name")
        self.model = model
        self.url = url or os.environ.get("MQM_DATABASE_URL")
        if not self.url:
            raise ValueError("no database URL: pass url= or set MQM_DATABASE_URL")
        self.model_version = model_version
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.max_queue = max(1, max_queue)
        self.retry_interval = retry_interval
        self.exit_timeout = exit_timeout
        # A model monitored on its inputs alone (contract task: features): an entry
        # without a prediction is valid, and stored with a null one.
        self.features_only = features_only
        # A deque, not a queue.Queue: append() and popleft() are atomic under the GIL, so
        # log() takes no lock that the writer thread could be holding when it is switched
        # out. The bound is checked with len() (a few more entries may get in when several
        # threads log at the same instant).
        self._queue: deque[_Entry] = deque()
        # itertools.count's next() is atomic under the GIL: lock-free counters.
        self._dropped = itertools.count()
        self._logged = itertools.count()
        self._written = 0
        self._invalid = 0
        # Entries taken off the queue and dealt with (stored or refused as invalid): flush()
        # waits on this, as "queue empty" is also true while the thread holds an entry.
        self._done = 0
        self._failures = 0
        self._last_error: str | None = None
        self._flush_now = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"mqm-logger-{model}", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # --- caller's thread -----------------------------------------------------------

    def log(
        self,
        features: Mapping[str, Any],
        prediction: Any = None,
        *,
        request_id: str | None = None,
        probabilities: Mapping[Any, float] | None = None,
        latency_ms: float | None = None,
        error: bool = False,
        error_message: str | None = None,
        timestamp: float | None = None,
        fallback_reason: str | None = None,
    ) -> bool:
        """Queue one inference; False if it was dropped (queue full or logger closed).

        ``prediction`` is always the model's own answer (None if it gave none), never
        a default served in its place, so the checks judge the model. A features-only
        logger (``features_only=True``) needs none: ``log(features)``.
        ``fallback_reason`` says why the caller was served the default instead
        (``flag``, ``error``, ``timeout``, ``overload``); None (the default) means the
        model's answer was served.
        """
        try:
            if self._closed or len(self._queue) >= self.max_queue:
                next(self._dropped)
                return False
            # A shallow copy: callers often reuse or change their feature dict after
            # predicting, and the write happens later on another thread.
            self._queue.append((
                time.time() if timestamp is None else timestamp, request_id,
                features.copy() if type(features) is dict else features,
                prediction, probabilities, latency_ms, error, error_message, fallback_reason,
            ))
            next(self._logged)
            return True
        except Exception:  # never into the predict path
            next(self._dropped)
            return False

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything queued so far; True if it was written within ``timeout``."""
        target = _peek(self._logged)
        deadline = time.monotonic() + timeout
        self._flush_now.set()
        while self._done < target:
            if time.monotonic() >= deadline or not self._thread.is_alive():
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Flush and stop the writer thread (also called at interpreter exit)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._flush_now.set()  # wakes the writer
        self._thread.join(timeout if timeout is not None else self.exit_timeout)
        atexit.unregister(self.close)

    def stats(self) -> LoggerStats:
        """Counters: logged, written, dropped (queue full or closed), invalid, write failures."""
        return {
            "logged": _peek(self._logged),
            "written": self._written,
            "dropped": _peek(self._dropped),
            "invalid": self._invalid,
            "write_failures": self._failures,
            "queued": len(self._queue),
            "last_error": self._last_error,
        }

    # --- background thread -----------------------------------------------------------

    def _run(self) -> None:
        pending: list[_Entry] = []
        entries = self._queue
        writer: _Writer | None = None
        last_write = time.monotonic()
        failing = False
        while True:
            stopping = self._stop.is_set()
            # Take entries only while there is room: leaving the queue full is what makes
            # log() drop instead of memory growing while the database is down. At stop,
            # take everything for the last write.
            room = len(entries) if stopping else min(len(entries),
                                                     self.max_queue - len(pending))
            took = room > 0
            for _ in range(room):
                pending.append(entries.popleft())
            due = (len(pending) >= self.batch_size or stopping or self._flush_now.is_set()
                   or time.monotonic() - last_write >= self.flush_interval)
            if pending and due:
                try:
                    if writer is None:
                        writer = _Writer(self.url or "", self.model, self.features_only)
                    invalid = writer.write(pending, self.model_version)
                    self._invalid += invalid
                    self._written += len(pending) - invalid
                    self._done += len(pending)
                    pending = []
                    if failing:
                        failing = False
                        _log.warning("mqm: writing inference logs for %s again", self.model)
                except Exception as exc:
                    self._failures += 1
                    self._last_error = _one_line(exc)
                    if not failing:  # once per outage, not once per retry
                        failing = True
                        _log.warning("mqm: cannot write inference logs for %s (will retry): %s",
                                     self.model, self._last_error)
                    if stopping:
                        break
                    self._stop.wait(self.retry_interval)
                    continue
                last_write = time.monotonic()
                continue  # more may have arrived while writing
            if not pending and not entries:
                self._flush_now.clear()
                if stopping:
                    break
            if stopping:
                continue
            wait = _BUSY_POLL if took else _IDLE_POLL
            if pending:
                wait = min(wait, max(0.0, self.flush_interval - (time.monotonic() - last_write)))
            self._flush_now.wait(wait)
        lost = len(pending)
        if lost:
            for _ in range(lost):
                next(self._dropped)
            _log.warning("mqm: %d inference logs for %s were not written", lost, self.model)
        if writer is not None:
            writer.engine.dispose()  # close the connection now, not whenever it is collected


def _one_line(exc: BaseException) -> str:
    """``Type: message``, first line, at most 300 characters, whatever the exception."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    line = f"{type(exc).__name__}: {text}".strip().splitlines()[0]
    return line if len(line) <= 300 else line[:300] + "..."


def _peek(counter: itertools.count[int]) -> int:
    # count's repr is "count(N)": reading it does not advance it.
    return int(repr(counter)[6:-1])


class _Writer:
    """Validates and inserts batches; imports SQLAlchemy only when first used."""

    def __init__(self, url: str, model: str, features_only: bool = False) -> None:
        import sqlalchemy as sa

        from monitor.errors import DatabaseError
        from monitor.store.db import create_engine, ensure_schema

        self.model = model
        self.features_only = features_only
        self.engine = create_engine(url)
        # Errors that say the database cannot take writes now (down, locked, not yet
        # created): the batch is kept and retried. Any other error is about the rows.
        self.unavailable: tuple[type[BaseException], ...] = (
            sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError,
            sa.exc.DisconnectionError, DatabaseError)
        ensure_schema(self.engine)

    def write(self, items: list[_Entry], version: str | None) -> int:
        """Insert the valid items; return how many were invalid (and so skipped).

        Raises only when the database is unavailable; the caller retries the batch.
        """
        from monitor.store.logs import LogRecord, make_record

        records: list[LogRecord] = []
        invalid = 0
        for item in items:
            ts, rid, features, prediction, probabilities, latency, error, message, fallback = item
            try:
                records.append(make_record({
                    "request_id": rid if rid is not None else uuid.uuid4().hex,
                    "timestamp": ts,
                    "features": features,
                    "prediction": prediction,
                    "probabilities": probabilities,
                    "latency_ms": latency,
                    "error": error,
                    "error_message": message,
                    "model_version": version,
                    "fallback_reason": fallback,
                }, require_prediction=not self.features_only))
            except Exception as exc:  # RowProblem, or whatever an odd object raises
                invalid += 1
                _log.warning("mqm: invalid inference log for %s skipped: %s", self.model,
                             _one_line(exc))
        try:
            self._insert(records)
        except self.unavailable:
            raise
        except Exception:
            # A row the database refuses (e.g. an id longer than the column on PostgreSQL)
            # must not block every later batch: store the batch row by row, skip that row.
            for rec in records:
                try:
                    self._insert([rec])
                except self.unavailable:
                    raise
                except Exception as exc:
                    invalid += 1
                    _log.warning("mqm: inference log %r for %s refused by the database: %s",
                                 rec.request_id[:50], self.model, _one_line(exc))
        return invalid

    def _insert(self, records: list[Any]) -> None:
        from monitor.store.logs import insert_logs

        with self.engine.begin() as conn:
            insert_logs(conn, self.model, records)
