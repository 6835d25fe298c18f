"""``FallbackFlag``: one model's fallback flag, cached for the serving process.

A daemon thread reads it every ``ttl`` seconds from the monitor's HTTP API or from the JSON
file the monitor writes, so ``is_active()`` is one attribute read and never does I/O on the
caller's thread. When the source cannot be read, the last known state is kept and
``age()`` says how old it is. ``MQM_FORCE_FALLBACK`` forces it on without asking anyone.

Only the standard library is imported here; ``urllib.request`` (about 30 ms) is imported by
the flag's thread, the first time it reads over HTTP.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

__all__ = ["ENV_FORCE", "MISSING", "FallbackFlag", "FlagState", "forced_by_env"]

ENV_FORCE = "MQM_FORCE_FALLBACK"

_log = logging.getLogger("mqm.client")
MISSING: Final = object()  # "no default": None is a valid default prediction
_MAX_BODY = 1 << 20  # a flag document is a few hundred bytes; refuse anything absurd


class _Unreadable(Exception):
    """The source answered, but not with a flag document."""


@dataclass(frozen=True, slots=True)
class FlagState:
    """What a ``FallbackFlag`` knows, at the time ``state()`` was called.

    ``active`` is the answer ``is_active()`` gives. ``reason``, ``source`` (``"auto"`` or
    ``"manual"``), ``since``, ``expires_at``, ``stale`` (the monitor's own data is old) and
    ``default_prediction`` come from the last document read. ``age_seconds`` is the time
    since the last successful read (None if never). ``reachable`` is whether the last read
    succeeded (None when there is no source: environment only). ``last_error`` describes
    the last failed read, None once a read succeeds.
    """

    model: str
    active: bool
    reason: str | None
    source: str | None
    since: str | None
    expires_at: str | None
    stale: bool
    default_prediction: Any
    age_seconds: float | None
    reachable: bool | None
    forced_by_env: bool
    last_error: str | None


def forced_by_env(model: str) -> bool:
    """True if ``MQM_FORCE_FALLBACK`` (comma-separated names, or ``*``) names ``model``."""
    names = {n.strip() for n in os.environ.get(ENV_FORCE, "").split(",")}
    return model in names or "*" in names


class FallbackFlag:
    """One model's fallback flag, cached and refreshed in the background.

    ``source`` is the monitor's base URL (``http://host:port``, read at
    ``{source}/v1/models/{model}/fallback``), a directory holding ``<model>.json`` (a path,
    a ``pathlib.Path`` or a ``file://`` URL), or None to obey only ``MQM_FORCE_FALLBACK``.
    That variable is read at construction and at every refresh, and wins over the source.

    Until the source has been read once, the flag is ``assume_when_unknown``; afterwards a
    failed read keeps the last known state. ``expires_at`` is reported, not enforced: ending
    a manual override is the monitor's decision, and the next successful read shows it.

    A daemon thread reads the source right away and then every ``ttl`` seconds, each read
    bounded by ``timeout``; its errors are recorded in ``state().last_error`` and logged
    once per outage on the ``mqm.client`` logger, never raised. ``background=False`` starts
    no thread: the flag changes only when ``refresh()`` is called. The constructor raises
    ``ValueError`` on a bad argument; nothing else here raises.
    """

    def __init__(
        self,
        model: str,
        source: str | os.PathLike[str] | None = None,
        *,
        ttl: float = 5.0,
        assume_when_unknown: bool = False,
        timeout: float = 1.0,
        background: bool = True,
    ) -> None:
        if not model:
            raise ValueError("model must be a non-empty name")
        if ttl <= 0 or timeout <= 0:
            raise ValueError(f"ttl and timeout must be positive, got ttl={ttl}, timeout={timeout}")
        self.model = model
        self.ttl = ttl
        self.timeout = timeout
        self.assume_when_unknown = assume_when_unknown
        self._url: str | None = None
        # Not pathlib: it would double the client's import time (urllib.parse, fnmatch, re).
        self._path: str | None = None
        self.source = None if source is None else str(source)
        if isinstance(source, str) and source.startswith(("http://", "https://")):
            from urllib.parse import quote

            self._url = f"{source.rstrip('/')}/v1/models/{quote(model, safe='')}/fallback"
        elif isinstance(source, str) and source.startswith("file://"):
            from urllib.parse import unquote

            self._path = os.path.join(unquote(source[len("file://"):]), f"{model}.json")
        elif isinstance(source, str) and "://" in source:
            raise ValueError(
                f"unsupported flag source {source!r}: use http(s)://, file:// or a path"
            )
        elif source is not None:
            self._path = os.path.join(os.fspath(source), f"{model}.json")
        self._io_lock = threading.Lock()  # one read at a time: refresh() and the thread
        # Everything known, replaced as a whole after each read: readers need no lock.
        self._snap = _Snap(None, None, None, None, None, forced_by_env(model))
        # The one field the hot path reads; rebound (atomically) after every read.
        self._active: bool = self._snap.active(self)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._run, name=f"mqm-flag-{model}", daemon=True
            )
            self._thread.start()

    @property
    def has_source(self) -> bool:
        return self._url is not None or self._path is not None

    # --- caller's thread: no I/O -------------------------------------------------------

    def is_active(self) -> bool:
        """Serve the default instead of the model? An attribute read, no I/O."""
        return self._active

    def age(self) -> float | None:
        """Seconds since the source was last read successfully; None if never."""
        ok_at = self._snap.ok_at
        return None if ok_at is None else time.monotonic() - ok_at

    def state(self) -> FlagState:
        """A snapshot of everything known about the flag (no I/O, no waiting on a read)."""
        snap = self._snap
        doc = snap.doc
        if snap.forced:
            reason: str | None = f"forced on by {ENV_FORCE}"
        elif doc is not None:
            reason = _text(doc.get("reason"))
        elif self.has_source:
            reason = (f"flag never read from {self.source}; assuming "
                      f"{'active' if self.assume_when_unknown else 'inactive'}")
        else:
            reason = None
        doc = doc or {}
        return FlagState(
            model=self.model,
            active=snap.active(self),
            reason=reason,
            source=_text(doc.get("source")),
            since=_text(doc.get("since")),
            expires_at=_text(doc.get("expires_at")),
            stale=doc.get("stale") is True,
            default_prediction=None if snap.default_text is None else json.loads(
                snap.default_text),
            age_seconds=None if snap.ok_at is None else time.monotonic() - snap.ok_at,
            reachable=snap.reachable,
            forced_by_env=snap.forced,
            last_error=snap.error,
        )

    def _default_value(self) -> Any:
        """The document's default prediction, a fresh copy per call; MISSING if none.

        A copy, because the caller may change the answer it was given, and the next call
        must not see that change.
        """
        text = self._snap.default_text
        return MISSING if text is None else json.loads(text)

    # --- I/O: the flag's thread, or refresh() ------------------------------------------

    def refresh(self) -> FlagState:
        """Read the source now, on this thread (at start-up, in tests); never raises."""
        self._read_once()
        return self.state()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the background thread (the cached state stays readable)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._read_once()
            self._stop.wait(self.ttl)

    def _read_once(self) -> None:
        with self._io_lock:
            old = self._snap
            try:
                forced = forced_by_env(self.model)
                if not self.has_source:
                    new = old._replace(forced=forced)
                else:
                    try:
                        doc = self._read_source()
                    except Exception as exc:
                        message = _one_line(exc)
                        if old.reachable is not False:  # once per outage, not once per ttl
                            _log.warning("mqm: cannot read the fallback flag of %s from %s "
                                         "(keeping the last known state): %s",
                                         self.model, self.source, message)
                        new = old._replace(reachable=False, error=message, forced=forced)
                    else:
                        if old.reachable is False:
                            _log.warning("mqm: reading the fallback flag of %s again",
                                         self.model)
                        default = doc.get("default_prediction")
                        new = _Snap(doc, None if default is None else json.dumps(default),
                                    time.monotonic(), True, None, forced)
            except Exception as exc:  # a bug here must not kill the thread
                new = old._replace(error=_one_line(exc))
            self._snap = new
            self._active = new.active(self)

    def _read_source(self) -> dict[str, object]:
        """The flag document; raises OSError, ValueError or ``_Unreadable`` otherwise."""
        if self._path is not None:
            with open(self._path, "rb") as f:
                body = f.read(_MAX_BODY + 1)
        else:
            body = self._fetch()
        if len(body) > _MAX_BODY:
            raise _Unreadable(f"flag document over {_MAX_BODY} bytes")
        doc = json.loads(body)
        if not isinstance(doc, dict) or type(doc.get("active")) is not bool:
            raise _Unreadable("not a flag document: a JSON object with a boolean 'active'")
        return doc

    def _fetch(self) -> bytes:
        import urllib.error
        import urllib.request

        assert self._url is not None
        request = urllib.request.Request(self._url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body: bytes = response.read(_MAX_BODY + 1)  # urlopen's result is untyped
                return body
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                raise _Unreadable(
                    f"HTTP 404: the monitor does not know model {self.model!r}"
                ) from None
            raise _Unreadable(f"HTTP {exc.code} from {self._url}") from None

    def __repr__(self) -> str:
        return f"FallbackFlag({self.model!r}, {self.source!r}, active={self._active})"


class _Snap(NamedTuple):
    doc: dict[str, object] | None  # the last document read successfully
    default_text: str | None  # its default_prediction as JSON, copied out per use
    ok_at: float | None  # time.monotonic() of that read
    reachable: bool | None  # did the last read succeed (None: not tried, or no source)
    error: str | None  # why the last read failed
    forced: bool  # MQM_FORCE_FALLBACK names the model

    def active(self, flag: FallbackFlag) -> bool:
        if self.forced:
            return True
        if self.doc is not None:
            return bool(self.doc["active"])
        return flag.has_source and flag.assume_when_unknown


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _text(value: object) -> str | None:
    return None if value is None else str(value)
