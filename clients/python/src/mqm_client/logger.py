"""``InferenceLogger``: records each prediction without slowing or breaking serving.

``log()`` only appends a tuple to a bounded queue (no I/O, no validation, no lock on
the caller's thread). A background thread sends batches to the monitor: over HTTP to
``mqm serve`` (``POST /v1/models/{model}/logs``, JSON lines, gzip, one keep-alive
connection; standard library only), or, with the full mqm install, straight into the
monitor's database. When the queue is full (the monitor is slow or down), new entries
are dropped and counted instead of blocking the caller; a failed send is retried with
a growing pause; pending entries are flushed at exit. An entry that cannot be stored
(a time in year 10**12, a number beyond a float, features nested 600 deep, a value the
database refuses) is counted as invalid and skipped: it never holds up the entries
after it. Over HTTP the monitor judges each row, by the rules of ``mqm ingest``.

What can still make ``log()`` wait is the GIL: the writer runs Python, and CPython
hands the GIL over every 5 ms (``sys.getswitchinterval()``), or after a C call
returns. The writer's longest C calls are the JSON encoding of one entry and, over
HTTP, the gzip of one batch (zlib lets the GIL go while it compresses). In the
database mode the row limits of ``monitor.store.logs`` (1,000,000 characters, 100,000
values) refuse a larger entry before it is encoded. The caller's own garbage collection
passes are the other source of a slow call, as for any allocation in the serving process.
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

from mqm_client.counters import peek

__all__ = ["ENV_MONITOR_URL", "ENV_TOKEN", "InferenceLogger", "LoggerStats"]

ENV_MONITOR_URL = "MQM_MONITOR_URL"
ENV_TOKEN = "MQM_INGEST_TOKEN"
ENV_DATABASE_URL = "MQM_DATABASE_URL"

_log = logging.getLogger("mqm.client")

# One queued inference, as log() puts it on the queue (a plain tuple: the cheapest to
# build on the caller's thread): timestamp, request_id, features, prediction,
# probabilities, latency_ms, error, error_message, fallback_reason.
_Entry = tuple[float, str | None, Mapping[str, Any], Any, Mapping[Any, float] | None,
               float | None, bool, str | None, str | None]
# A label, as log_label() queues it: timestamp, request_id, _LABEL, the label. Told from
# an inference by its length.
_LABEL = object()
_Queued = _Entry | tuple[float, str, object, Any]

# How often the writer looks at the queue: log() never wakes it (that would take a lock
# on the caller's thread). Soon again while entries arrive, less often when idle.
_BUSY_POLL = 0.005
_IDLE_POLL = 0.05
# The writer encodes a batch in Python, holding the GIL; CPython takes it back for a
# waiting thread only every 5 ms (sys.getswitchinterval()). So the writer lets it go by
# itself every so many entries (a few hundred microseconds of work): a log() call that
# arrives meanwhile waits that long at most, not 5 ms.
_YIELD_EVERY = 32


def _yield_gil() -> None:
    # A sleep releases the GIL; a thread waiting for it takes it at once.
    time.sleep(0.00005)


class LoggerStats(TypedDict):
    """``InferenceLogger.stats()``: a plain dict with these keys. Counts are of entries,
    inference logs and labels together."""

    logged: int
    written: int  # stored, or found already stored (a batch sent again)
    dropped: int  # queue full, or the logger closed
    invalid: int  # refused: by the monitor's row rules, or not encodable as JSON
    write_failures: int  # failed attempts to send a batch (each retried)
    queued: int
    last_error: str | None


class _Unavailable(Exception):
    """The monitor cannot take the batch now (down, slow, refusing the token): retried."""


class InferenceLogger:
    """Buffered, background writer of inference logs (and labels) for one model.

    ``url`` is the monitor: its HTTP API, ``http://host:port`` (``mqm serve``; the client
    alone is enough), or its database, a SQLAlchemy URL (needs the full mqm install;
    the tables must exist: ``mqm db upgrade`` is the monitor's job, and a missing table
    is an error counted in ``stats()``, never created from here). Default:
    ``MQM_MONITOR_URL``, else ``MQM_DATABASE_URL``. ``token`` is the bearer token the
    API takes for posting (the monitor's ingest token; default ``MQM_INGEST_TOKEN``).

    Over HTTP each batch of at most ``batch_size`` entries is one request, waited for at
    most ``timeout`` seconds; a failed one is tried again after ``retry_interval``
    seconds, doubling up to ``max_retry_interval``. Nothing here raises into the caller:
    failures are counted in ``stats()`` and logged at WARNING on the ``mqm.client`` logger.
    """

    def __init__(
        self,
        model: str,
        url: str | None = None,
        *,
        token: str | None = None,
        model_version: str | None = None,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        retry_interval: float = 2.0,
        max_retry_interval: float = 30.0,
        timeout: float = 5.0,
        compress: bool = True,
        exit_timeout: float = 5.0,
        features_only: bool = False,
    ) -> None:
        if not model:
            raise ValueError("model must be a non-empty name")
        self.model = model
        self.url = url or os.environ.get(ENV_MONITOR_URL) or os.environ.get(ENV_DATABASE_URL)
        if not self.url:
            raise ValueError(f"no monitor: pass url= (http://host:port, or a database URL) or "
                             f"set {ENV_MONITOR_URL}")
        self.http = self.url.split(":", 1)[0].lower() in ("http", "https")
        if not self.http and not _full_install():
            raise ValueError(
                f"{self.url.split(':', 1)[0]}: a database URL needs the full mqm install; "
                "with mqm-client alone, pass the monitor's HTTP URL (http://host:port)")
        if self.http:
            # Loaded here, once, on the thread that builds the logger (at start-up), not by
            # the writer thread: an import runs Python under the import lock and would take
            # the GIL from the serving threads' log() calls for milliseconds.
            import gzip  # noqa: F401
            import http.client  # noqa: F401
            import json  # noqa: F401
            import random  # noqa: F401
            import urllib.parse  # noqa: F401
        self.token = token or os.environ.get(ENV_TOKEN) or None
        self.model_version = model_version
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.max_queue = max(1, max_queue)
        self.retry_interval = retry_interval
        self.max_retry_interval = max(retry_interval, max_retry_interval)
        self.timeout = timeout
        self.compress = compress
        self.exit_timeout = exit_timeout
        # A model monitored on its inputs alone (contract task: features): an entry
        # without a prediction is valid, and stored with a null one. Over HTTP the
        # monitor's contract decides that by itself.
        self.features_only = features_only
        # A deque, not a queue.Queue: append() and popleft() are atomic under the GIL, so
        # log() takes no lock that the writer thread could be holding when it is switched
        # out. The bound is checked with len() (a few more entries may get in when several
        # threads log at the same instant).
        self._queue: deque[_Queued] = deque()
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
        model needs none: ``log(features)``.
        ``fallback_reason`` says why the caller was served the default instead
        (``flag``, ``error``, ``timeout``, ``overload``); None (the default) means the
        model's answer was served. ``request_id`` is what labels join on (one is made up
        when None); ``probabilities`` (class -> probability) is what the estimated
        accuracy and the ROC AUC need.
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

    def log_label(self, request_id: str, label: Any, *, timestamp: float | None = None) -> bool:
        """Queue the ground-truth label of a logged request (``timestamp``: when it became
        known, default now); False if it was dropped. Sent as ``mqm labels`` loads one: a
        label already stored is kept, not replaced."""
        try:
            if self._closed or len(self._queue) >= self.max_queue:
                next(self._dropped)
                return False
            self._queue.append((time.time() if timestamp is None else timestamp, request_id,
                                _LABEL, label))
            next(self._logged)
            return True
        except Exception:
            next(self._dropped)
            return False

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything queued so far; True if it was written within ``timeout``."""
        target = peek(self._logged)
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
            "logged": peek(self._logged),
            "written": self._written,
            "dropped": peek(self._dropped),
            "invalid": self._invalid,
            "write_failures": self._failures,
            "queued": len(self._queue),
            "last_error": self._last_error,
        }

    # --- background thread -----------------------------------------------------------

    def _writer(self) -> _HttpWriter | _DatabaseWriter:
        if self.http:
            return _HttpWriter(self.url or "", self.model, self.token, self.timeout,
                               self.batch_size, self.compress)
        return _DatabaseWriter(self.url or "", self.model, self.features_only)

    def _run(self) -> None:
        pending: list[_Queued] = []
        # The pending entries made ready to send (encoded, their ids fixed) and how many of
        # them: a retried batch is sent exactly as before, so ids made up here hold.
        prepared: list[Any] = []
        ready = 0
        refused_early = 0  # of those, entries refused while being made ready
        entries = self._queue
        writer: _HttpWriter | _DatabaseWriter | None = None
        last_write = time.monotonic()
        failures_in_a_row = 0
        while True:
            stopping = self._stop.is_set()
            # Take entries only while there is room: leaving the queue full is what makes
            # log() drop instead of memory growing while the monitor is down. At stop,
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
                        writer = self._writer()
                    if ready < len(pending):
                        more, refused = writer.prepare(pending[ready:], self.model_version)
                        prepared.extend(more)
                        refused_early += refused
                        ready = len(pending)
                    refused = refused_early + writer.send(prepared)
                    self._invalid += refused
                    self._written += len(pending) - refused
                    self._done += len(pending)
                    pending, prepared, ready, refused_early = [], [], 0, 0
                    if failures_in_a_row:
                        failures_in_a_row = 0
                        _log.warning("mqm: writing inference logs for %s again", self.model)
                except Exception as exc:
                    self._failures += 1
                    failures_in_a_row += 1
                    self._last_error = _one_line(exc)
                    if failures_in_a_row == 1:  # once per outage, not once per retry
                        _log.warning("mqm: cannot write inference logs for %s (will retry): %s",
                                     self.model, self._last_error)
                    if stopping:
                        break
                    self._stop.wait(_backoff(self.retry_interval, self.max_retry_interval,
                                             failures_in_a_row))
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
            writer.close()  # close the connection now, not whenever it is collected


def _backoff(first: float, most: float, failures: int) -> float:
    """The pause before the next attempt: ``first``, doubled per failure in a row, at
    most ``most``, less a random part so that many replicas do not retry in step."""
    import random

    pause = min(most, first * 2 ** min(failures - 1, 30))
    return float(pause * random.uniform(0.75, 1.0))


def _full_install() -> bool:
    """Whether the monitor's own store code is importable (the full mqm install)."""
    import importlib.util

    try:
        return importlib.util.find_spec("monitor.store") is not None
    except ImportError:  # no ``monitor`` package at all
        return False


def _one_line(exc: BaseException) -> str:
    """``Type: message``, first line, at most 300 characters, whatever the exception."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    line = f"{type(exc).__name__}: {text}".strip().splitlines()[0]
    return line if len(line) <= 300 else line[:300] + "..."



def _request_id(value: Any) -> Any:
    # Made up once, when the entry is made ready: a retried batch sends the same one.
    return uuid.uuid4().hex if value is None else value


# --- over HTTP ----------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """What ``json`` cannot encode by itself, as a log file would hold it: numpy and
    pandas scalars and arrays as their Python values, times in ISO 8601, other
    mappings as objects. Anything else makes the entry invalid."""
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, Mapping):
        return dict(value)
    for name in ("tolist", "item"):  # numpy and pandas, without importing them
        method = getattr(value, name, None)
        if callable(method):
            return method()
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    raise TypeError(f"cannot send a value of type {type(value).__name__}")


class _HttpWriter:
    """Posts batches to ``mqm serve`` as JSON lines over one keep-alive connection.

    Standard library only (``http.client``, ``json``, ``gzip``), imported by the writer
    thread. The monitor validates each row and answers with counts: rows it refused
    are invalid, rows it already held (a batch sent again) are written.
    """

    def __init__(self, url: str, model: str, token: str | None, timeout: float,
                 batch_size: int, compress: bool) -> None:
        import gzip
        import http.client
        import json
        from urllib.parse import quote, urlsplit

        self._http = http.client
        self._gzip = gzip.compress if compress else None
        self._dumps = json.JSONEncoder(separators=(",", ":"), default=_jsonable).encode
        self._loads = json.loads
        self.model = model
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not a monitor URL (http://host:port)")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        base = parts.path.rstrip("/") + f"/v1/models/{quote(model, safe='')}"
        self._paths = {"logs": f"{base}/logs", "labels": f"{base}/labels"}
        self._timeout = timeout
        self._batch_size = batch_size
        self._headers = {"Content-Type": "application/x-ndjson", "Accept": "application/json"}
        if compress:
            self._headers["Content-Encoding"] = "gzip"
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: Any = None

    def prepare(self, items: list[_Queued], version: str | None) -> tuple[list[Any], int]:
        """(kind, JSON line) per entry that encodes, and how many did not."""
        out: list[tuple[str, bytes]] = []
        refused = 0
        for count, item in enumerate(items, start=1):
            if count % _YIELD_EVERY == 0:
                _yield_gil()
            try:
                if len(item) == 4:
                    row: dict[str, Any] = {"request_id": item[1], "label": item[3],
                                           "timestamp": item[0]}
                    kind = "labels"
                else:
                    (ts, rid, features, prediction, probabilities, latency, error, message,
                     fallback) = item
                    row = {"request_id": _request_id(rid), "timestamp": ts,
                           "features": features, "prediction": prediction}
                    if probabilities is not None:
                        row["probabilities"] = probabilities
                    if latency is not None:
                        row["latency_ms"] = latency
                    if error:
                        row["error"] = error
                    if message is not None:
                        row["error_message"] = message
                    if version is not None:
                        row["model_version"] = version
                    if fallback is not None:
                        row["fallback_reason"] = fallback
                    kind = "logs"
                out.append((kind, self._dumps(row).encode("utf-8", "surrogateescape")))
            except Exception as exc:  # a value json cannot encode, a lone surrogate
                refused += 1
                _log.warning("mqm: invalid inference log for %s skipped: %s", self.model,
                             _one_line(exc))
        return out, refused

    def send(self, prepared: list[Any]) -> int:
        """Post the lines, ``batch_size`` per request; return how many were refused.
        Raises ``_Unavailable`` (or a connection error) when the monitor cannot take them."""
        refused = 0
        for kind in ("logs", "labels"):
            lines = [line for k, line in prepared if k == kind]
            for start in range(0, len(lines), self._batch_size):
                refused += self._post(kind, lines[start:start + self._batch_size])
        return refused

    def _post(self, kind: str, lines: list[bytes]) -> int:
        body = b"\n".join(lines) + b"\n"
        status, answer = self._request(self._paths[kind], body)
        if status == 200:
            refused = int(answer.get("refused", 0))
            problems = answer.get("problems") or []
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                _log.warning("mqm: the monitor refused %d %s of %s: %s%s", refused,
                             "label(s)" if kind == "labels" else "inference log(s)",
                             self.model, problems[0], more)
            return refused
        detail = str(answer.get("detail", ""))[:200] if isinstance(answer, dict) else ""
        if status == 413 and len(lines) > 1:  # over the monitor's bounds: halve it
            half = len(lines) // 2
            return self._post(kind, lines[:half]) + self._post(kind, lines[half:])
        if status in (400, 413, 415, 422):
            # The monitor will never take these lines as they are: refused, so that they
            # do not hold up every later batch.
            _log.warning("mqm: the monitor refused a batch of %d for %s: HTTP %d %s",
                         len(lines), self.model, status, detail)
            return len(lines)
        # 401, 403 (the token), 404 (a model the monitor does not declare yet), 5xx:
        # kept and tried again, and the queue fills meanwhile.
        raise _Unavailable(f"HTTP {status} from {self._host}: {detail}")

    def _connect(self) -> Any:
        cls = self._http.HTTPSConnection if self._https else self._http.HTTPConnection
        return cls(self._host, self._port, timeout=self._timeout)

    def _request(self, path: str, body: bytes) -> tuple[int, Any]:
        payload = self._gzip(body, compresslevel=1) if self._gzip else body
        reused = self._conn is not None
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._connect()
            try:
                self._conn.request("POST", path, body=payload, headers=self._headers)
                response = self._conn.getresponse()
                data = response.read()
            except (self._http.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if reused and attempt == 1:  # the server closed an idle kept-alive one
                    continue
                raise
            except BaseException:
                self.close()
                raise
            if response.will_close:
                self.close()
            try:
                answer = self._loads(data) if data else {}
            except ValueError:
                answer = {"detail": data[:200].decode("utf-8", "replace")}
            return response.status, answer
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


# --- into the monitor's database (the full mqm install) ------------------------------------


class _DatabaseWriter:
    """Validates and inserts batches; imports SQLAlchemy and mqm's store only when first
    used. Never creates or migrates the tables: that is the monitor's ``mqm db upgrade``."""

    def __init__(self, url: str, model: str, features_only: bool = False) -> None:
        import sqlalchemy as sa

        from monitor.errors import DatabaseError
        from monitor.store.db import create_engine, current_revision, head_revision, safe_url

        self.model = model
        self.features_only = features_only
        self.engine = create_engine(url)
        # Errors that say the database cannot take writes now (down, locked, not yet
        # migrated): the batch is kept and retried. Any other error is about the rows.
        self.unavailable: tuple[type[BaseException], ...] = (
            sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError,
            sa.exc.DisconnectionError, DatabaseError)
        try:
            revision = current_revision(self.engine)
            if revision != head_revision():
                raise DatabaseError(
                    f"the database at {safe_url(url)} " + (
                        "has no mqm tables" if revision is None else
                        f"is at revision {revision}, this mqm expects {head_revision()}")
                    + ": run `mqm db upgrade` on the monitor's side (the logger never "
                    "changes the monitor's tables)")
        except BaseException:
            self.engine.dispose()
            raise

    def prepare(self, items: list[_Queued], version: str | None) -> tuple[list[Any], int]:
        """Validated records and labels, and how many entries were invalid."""
        from monitor.store.logs import (
            clean_value,
            make_record,
            record_time,
            request_id_of,
        )

        ready: list[Any] = []
        invalid = 0
        for item in items:
            try:
                if len(item) == 4:
                    value = clean_value("label", item[3])
                    if value is None:
                        raise ValueError("field 'label': is missing")
                    ready.append(("label", (request_id_of(item[1]), value,
                                            record_time("timestamp", item[0]))))
                    continue
                (ts, rid, features, prediction, probabilities, latency, error, message,
                 fallback) = item
                ready.append(("log", make_record({
                    "request_id": _request_id(rid),
                    "timestamp": ts,
                    "features": features,
                    "prediction": prediction,
                    "probabilities": probabilities,
                    "latency_ms": latency,
                    "error": error,
                    "error_message": message,
                    "model_version": version,
                    "fallback_reason": fallback,
                }, require_prediction=not self.features_only)))
            except Exception as exc:  # RowProblem, or whatever an odd object raises
                invalid += 1
                _log.warning("mqm: invalid inference log for %s skipped: %s", self.model,
                             _one_line(exc))
        return ready, invalid

    def send(self, prepared: list[Any]) -> int:
        """Insert the records; return how many the database refused.

        Raises only when the database is unavailable; the caller retries the batch.
        """
        refused = 0
        try:
            self._insert(prepared)
        except self.unavailable:
            raise
        except Exception:
            # A row the database refuses (e.g. an id longer than the column on PostgreSQL)
            # must not block every later batch: store the batch row by row, skip that row.
            for one in prepared:
                try:
                    self._insert([one])
                except self.unavailable:
                    raise
                except Exception as exc:
                    refused += 1
                    rid = one[1].request_id if one[0] == "log" else one[1][0]
                    _log.warning("mqm: inference log %r for %s refused by the database: %s",
                                 rid[:50], self.model, _one_line(exc))
        return refused

    def _insert(self, prepared: list[Any]) -> None:
        from monitor.store.logs import insert_labels, insert_logs

        with self.engine.begin() as conn:
            insert_logs(conn, self.model, [rec for kind, rec in prepared if kind == "log"])
            labels = [label for kind, label in prepared if kind == "label"]
            if labels:
                insert_labels(conn, self.model, labels)

    def close(self) -> None:
        self.engine.dispose()
