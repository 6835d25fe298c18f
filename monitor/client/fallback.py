"""``FallbackFlag`` and ``guard``: serve a safe default while the monitor says the model is bad.

``FallbackFlag`` caches one model's fallback flag. A daemon thread reads it every ``ttl``
seconds from the monitor's HTTP API or from the JSON file the monitor writes, so
``is_active()`` is one attribute read and never does I/O on the caller's thread. When the
source cannot be read, the last known state is kept and ``age()`` says how old it is.

``guard`` wraps a predict function: it answers with the default prediction when the flag is
on, when predict raises, takes too long or too many calls are in flight, records which
path answered, and hands every call to an ``InferenceLogger`` with the model's own
prediction (never the default; while the flag is on, from a shadow call of the model in
the background). Failures of the monitor or of the logger never reach the caller.

Only the standard library is imported here; ``urllib.request`` (about 30 ms) is imported by
the flag's thread, the first time it reads over HTTP.
"""

from __future__ import annotations

import contextvars
import functools
import inspect  # already loaded by dataclasses
import itertools
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

__all__ = ["ENV_FORCE", "FallbackFlag", "FlagState", "Guarded", "guard"]

ENV_FORCE = "MQM_FORCE_FALLBACK"
PATHS = ("model", "flag", "error", "timeout", "overload", "raised")

_log = logging.getLogger("mqm.client")
_MISSING: Any = object()  # "no default": None is a valid default prediction
_MAX_BODY = 1 << 20  # a flag document is a few hundred bytes; refuse anything absurd
_POOL_SIZE = 32  # worker threads of a guard with a timeout and no max_in_flight
SHADOW_IN_FLIGHT = 4  # default bound on a guard's shadow calls running at once


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
        source: str | Path | None = None,
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
        self._path: Path | None = None
        self.source = None if source is None else str(source)
        if isinstance(source, str) and source.startswith(("http://", "https://")):
            from urllib.parse import quote

            self._url = f"{source.rstrip('/')}/v1/models/{quote(model, safe='')}/fallback"
        elif isinstance(source, str) and source.startswith("file://"):
            from urllib.parse import unquote

            self._path = Path(unquote(source[len("file://"):])) / f"{model}.json"
        elif isinstance(source, str) and "://" in source:
            raise ValueError(
                f"unsupported flag source {source!r}: use http(s)://, file:// or a path"
            )
        elif source is not None:
            self._path = Path(source) / f"{model}.json"
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
        """The document's default prediction, a fresh copy per call; _MISSING if none.

        A copy, because the caller may change the answer it was given, and the next call
        must not see that change.
        """
        text = self._snap.default_text
        return _MISSING if text is None else json.loads(text)

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

    def _read_source(self) -> dict[str, Any]:
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
                return response.read(_MAX_BODY + 1)
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
    doc: dict[str, Any] | None  # the last document read successfully
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


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class _NoFlag:
    """Stands in for a missing flag, so that the hot path has no ``flag is None`` test."""

    _active = False

    def _default_value(self) -> Any:
        return _MISSING


# --- guard ---------------------------------------------------------------------------


class Guarded(Protocol):
    """A guarded predict function: call it like the original."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def stats(self) -> dict[str, int | None]:
        """Calls per path (see ``guard``), plus no_default, log_failures, in_flight, and
        the shadow calls' counts."""
        ...

    def last_path(self) -> str | None:
        """The path of this function's last call in the current thread (or asyncio task)."""
        ...


def guard(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    default: Any = _MISSING,
    flag: FallbackFlag | None = None,
    timeout: float | None = None,
    max_in_flight: int | None = None,
    logger: Any = None,
    features_of: Callable[..., Any] | None = None,
    shadow: bool = True,
    max_shadow_in_flight: int = SHADOW_IN_FLIGHT,
) -> Any:
    """Wrap a synchronous predict function so that a bad model or monitor cannot hurt serving.

    Use as ``guard(predict, default=0, flag=flag)`` or as a decorator ``@guard(...)``.
    Each call takes one of these paths (counted in ``.stats()``; ``.last_path()`` gives
    the path of the last call in the current thread or asyncio task, a ``ContextVar``):

    - ``"flag"``: ``flag.is_active()``; the model is not called for the answer (with a
      ``logger``, it is called in the background, as a shadow: see below).
    - ``"overload"``: ``max_in_flight`` calls of the model are already running (timed-out
      calls still running in the background count); the model is not called.
    - ``"timeout"``: the model did not answer within ``timeout`` seconds.
    - ``"error"``: the model raised an ``Exception``.
    - ``"model"``: the model's own answer.
    - ``"raised"``: the model raised and there is no default: its exception propagates.

    The first four answer with the default: ``default`` (called with the call's arguments
    if callable, so it can build a fresh object per call), else the flag document's
    ``default_prediction`` (a fresh copy per call). When there is no default at all, the
    guard behaves as if it were not there: the model is called (flag, overload), waited
    for (timeout), or its exception propagates (error); each such case counts as
    ``no_default``. The default is the caller's code, so its own exceptions propagate.

    Cost (``bench/client.py``): with neither ``timeout`` nor ``logger``, 0.2-0.3 us per
    call; ``max_in_flight`` adds a few tenths more. ``timeout`` runs each call in a pool of
    daemon worker threads (``max_in_flight`` threads, else 32, started as needed), a
    hand-off between threads that costs 15-45 us; a timed-out call keeps running there and
    its result is discarded.
    Calls queued behind busy workers count against their timeout, and are skipped if it
    passes first.

    ``logger`` (an ``InferenceLogger``) gets each call once: ``log(features, prediction,
    latency_ms=, error=, error_message=, fallback_reason=)``. ``prediction`` is always the
    **model's own** answer, never the default; ``fallback_reason`` (None when the model
    answered) says that the caller was served the default, and why. The monitor judges
    the model from these rows (prediction drift, accuracy): were the default logged, a
    model in fallback would be judged on the default, its runs would stay bad, and the
    flag, which only recovers on good runs, might never turn off. So:

    - ``"model"``: its prediction; latency is the caller's wait, as on every path below
      but a shadow call.
    - ``"error"``, ``"timeout"``: prediction None (the model gave none in time),
      ``error=True`` with the message.
    - ``"overload"``: prediction None, ``error=False``: the model was not called.
    - ``"flag"``, with ``shadow`` (the default): the caller gets the default at once and
      never waits, while the model runs in the background on the same arguments (a
      pool of daemon threads); when it finishes, its prediction is logged with
      ``fallback_reason="flag"`` and ``latency_ms`` the model's own time, or, if it
      raised, prediction None, ``error=True`` and the message. A shadow call slower
      than ``timeout`` is logged with its prediction and ``error=True``, as serving
      would have timed out. These rows are what lets the flag recover: they show the
      monitor the model on live traffic while its answers are not served. At most
      ``max_shadow_in_flight`` shadow calls run at once; a call beyond that is not
      shadowed (counted as ``shadow_skipped``) and is logged as with ``shadow=False``:
      prediction None, ``fallback_reason="flag"``. Shadow calls happen only with a
      ``logger`` (without one they would be wasted work), use a pool of their own (so
      they never hold the workers or the ``max_in_flight`` tokens that answering calls
      need), and get the caller's context variables. They run after the caller has its
      answer, so they get a shallow copy of each ``dict`` argument, taken at the call: a
      caller reusing its dict changes neither what the model sees nor what is logged.
    - ``"flag"`` with ``shadow=False``: prediction None; the model is not called.

    Features are the first positional argument (else the first keyword argument's
    value), or ``features_of(*args, **kwargs)``. A logger or ``features_of`` failure is
    swallowed and counted as ``log_failures``. ``.stats()`` also counts ``shadow`` (shadow
    calls started) and ``shadow_skipped``, and gives ``shadow_in_flight`` (None when the
    guard makes no shadow calls).
    """
    if fn is None:
        return functools.partial(
            guard, default=default, flag=flag, timeout=timeout, max_in_flight=max_in_flight,
            logger=logger, features_of=features_of, shadow=shadow,
            max_shadow_in_flight=max_shadow_in_flight,
        )
    if not callable(fn):
        raise TypeError(f"guard needs a callable, got {fn!r}")
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError("guard wraps synchronous functions; await an async model yourself")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    if max_in_flight is not None and max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
    if max_shadow_in_flight < 1:
        raise ValueError(f"max_shadow_in_flight must be at least 1, got {max_shadow_in_flight}")
    if flag is not None and not isinstance(flag, FallbackFlag):
        raise TypeError(f"flag must be a FallbackFlag, got {type(flag).__name__}")
    shadows = (max_shadow_in_flight if shadow and logger is not None and flag is not None
               else None)
    return _build(fn, default, flag, timeout, max_in_flight, logger, features_of, shadows)


def _build(
    fn: Callable[..., Any],
    default: Any,
    flag: FallbackFlag | None,
    timeout: float | None,
    max_in_flight: int | None,
    logger: Any,
    features_of: Callable[..., Any] | None,
    shadows: int | None,
) -> Guarded:
    fl: Any = flag if flag is not None else _NoFlag()
    flag_default = fl._default_value
    extra = ("no_default", "log_failures", "shadow", "shadow_skipped")
    counters = {name: itertools.count() for name in (*PATHS, *extra)}
    # Bound next() of each counter: atomic under the GIL, so no lock on the hot path.
    (n_model, n_flag, n_error, n_timeout, n_overload, n_raised, n_no_default, n_log_failed,
     n_shadow, n_shadow_skipped) = (functools.partial(next, counters[name])
                                    for name in (*PATHS, *extra))
    last: contextvars.ContextVar[str | None] = contextvars.ContextVar(
        f"mqm_guard_{getattr(fn, '__qualname__', 'fn')}", default=None
    )
    set_last = last.set
    clock = time.perf_counter
    # A list of tokens is a lock-free counting semaphore: pop() and append() are atomic.
    tokens: list[None] | None = None if max_in_flight is None else [None] * max_in_flight
    pool = None if timeout is None else _Pool(
        max_in_flight or _POOL_SIZE, f"mqm-guard-{getattr(fn, '__name__', 'fn')}"
    )
    # Shadow calls (flag on, logged): a pool and tokens of their own, so that they never
    # hold what answering calls need; the tokens bound them, so nothing queues there.
    shadow_tokens: list[None] | None = None if shadows is None else [None] * shadows
    shadow_pool = None if shadows is None else _Pool(
        shadows, f"mqm-shadow-{getattr(fn, '__name__', 'fn')}"
    )

    if callable(default):
        def answer(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return default(*args, **kwargs)
    elif default is not _MISSING:
        def answer(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return default
    else:
        def answer(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return flag_default()

    def fast(*args: Any, **kwargs: Any) -> Any:
        # No logger, timeout or max_in_flight: the benchmarked path, kept minimal.
        if fl._active:
            result = answer(args, kwargs)
            if result is not _MISSING:
                n_flag()
                set_last("flag")
                return result
            n_no_default()
        try:
            result = fn(*args, **kwargs)
        except Exception:
            result = answer(args, kwargs)
            if result is _MISSING:
                n_no_default()
                n_raised()
                set_last("raised")
                raise
            n_error()
            set_last("error")
            return result
        n_model()
        set_last("model")
        return result

    def run_model(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, str | None, Any]:
        """(result, reason, exception): reason None when the model answered."""
        holds_token = False
        if tokens is not None:
            try:
                tokens.pop()
                holds_token = True
            except IndexError:
                result = answer(args, kwargs)
                if result is not _MISSING:
                    return result, "overload", None
                n_no_default()
        if pool is None:
            try:
                return fn(*args, **kwargs), None, None
            except Exception as exc:
                return _MISSING, None, exc
            finally:
                if holds_token:
                    tokens.append(None)  # type: ignore[union-attr]
        call = _Call(fn, args, kwargs, tokens if holds_token else None)
        pool.submit(call)
        if not call.done.acquire(True, timeout):  # type: ignore[arg-type]
            result = answer(args, kwargs)
            if result is not _MISSING:
                call.abandoned = True  # skipped if still queued, else its result is dropped
                return result, "timeout", None
            n_no_default()
            call.done.acquire()
        if call.exc is None:
            return call.result, None, None
        if not isinstance(call.exc, Exception):
            raise call.exc  # KeyboardInterrupt and the like: not the model's answer
        return _MISSING, None, call.exc

    def log_shadow(features: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A shadow call, on a shadow worker: run the model, log what it said."""
        started = clock()
        message: str | None = None
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            result, message = None, f"{type(exc).__name__}: {exc}"
        took = clock() - started
        if message is None and timeout is not None and took > timeout:
            message = f"timed out after {timeout} s (shadow call took {took:.3f} s)"
        try:
            logger.log(features, result, latency_ms=took * 1000.0, error=message is not None,
                       error_message=message, fallback_reason="flag")
        except Exception:
            n_log_failed()

    def shadow_started(features: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Hand the model call to a shadow worker; False if ``max_shadow_in_flight`` run."""
        try:
            shadow_tokens.pop()  # type: ignore[union-attr]
        except IndexError:
            n_shadow_skipped()
            return False
        # The model reads its arguments, and the row is logged, after the caller has its
        # answer and may have reused its dicts: both get one shallow copy of each, taken now.
        copies: dict[int, dict[Any, Any]] = {}

        def snapshot(value: Any) -> Any:
            if type(value) is not dict:
                return value
            if id(value) not in copies:
                copies[id(value)] = value.copy()
            return copies[id(value)]

        shadow_pool.submit(_Call(  # type: ignore[union-attr]
            log_shadow, (snapshot(features), tuple(map(snapshot, args)),
                         {k: snapshot(v) for k, v in kwargs.items()}), {}, shadow_tokens))
        n_shadow()
        return True

    def full(*args: Any, **kwargs: Any) -> Any:
        started = clock() if logger is not None else 0.0
        exc: BaseException | None = None
        reason: str | None = None
        result = _MISSING
        if fl._active:
            result = answer(args, kwargs)
            if result is _MISSING:
                n_no_default()
            else:
                reason = "flag"
        if reason is None:
            result, reason, exc = run_model(args, kwargs)
            if exc is not None:
                result = answer(args, kwargs)
                if result is not _MISSING:
                    reason = "error"
                else:
                    n_no_default()
                    result = None
        path = reason or ("raised" if exc is not None else "model")
        counters_by_path[path]()
        set_last(path)
        if logger is not None:
            try:
                features = (features_of(*args, **kwargs) if features_of is not None
                            else args[0] if args else next(iter(kwargs.values()), None))
                shadowed = (reason == "flag" and shadow_tokens is not None
                            and shadow_started(features, args, kwargs))
                if not shadowed:  # else the shadow call logs it once the model has answered
                    failed = exc is not None or reason == "timeout"
                    logger.log(
                        features,
                        # The model's own answer only: a default would be judged as the model's.
                        result if reason is None else None,
                        latency_ms=(clock() - started) * 1000.0,
                        error=failed,
                        error_message=(None if not failed
                                       else f"timed out after {timeout} s" if reason == "timeout"
                                       else f"{type(exc).__name__}: {exc}"),
                        fallback_reason=reason,
                    )
            except Exception:  # the logger must never break a prediction
                n_log_failed()
        if path == "raised":
            try:
                raise exc  # type: ignore[misc]
            finally:
                exc = None  # break the frame <-> traceback cycle
        return result

    counters_by_path = {
        "model": n_model, "flag": n_flag, "error": n_error, "timeout": n_timeout,
        "overload": n_overload, "raised": n_raised,
    }

    def stats() -> dict[str, int | None]:
        out: dict[str, int | None] = {name: _peek(c) for name, c in counters.items()}
        out["calls"] = sum(_peek(counters[p]) for p in PATHS)
        out["in_flight"] = None if tokens is None else max_in_flight - len(tokens)  # type: ignore[operator]
        out["shadow_in_flight"] = (None if shadow_tokens is None
                                   else shadows - len(shadow_tokens))  # type: ignore[operator]
        return out

    wrapper = fast if logger is None and pool is None and tokens is None else full
    functools.update_wrapper(wrapper, fn)
    wrapper.stats = stats  # type: ignore[attr-defined]
    wrapper.last_path = last.get  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _peek(counter: itertools.count[int]) -> int:
    # count's repr is "count(N)": reading it does not advance it.
    return int(repr(counter)[6:-1])


class _Call:
    """One model call handed to a worker; ``done`` is released when it has finished."""

    __slots__ = ("abandoned", "args", "context", "done", "exc", "fn", "kwargs", "result",
                 "tokens")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 tokens: list[None] | None) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        # The caller's context variables (request ids, tracing) follow the call.
        self.context = contextvars.copy_context()
        # A bare lock is the cheapest one-shot signal (an Event is a Condition and a lock).
        self.done = threading.Lock()
        self.done.acquire()
        self.result: Any = None
        self.exc: BaseException | None = None
        self.abandoned = False
        self.tokens = tokens

    def run(self) -> None:
        try:
            if not self.abandoned:
                self.result = self.context.run(self.fn, *self.args, **self.kwargs)
        except BaseException as exc:
            self.exc = exc
        finally:
            if self.tokens is not None:
                self.tokens.append(None)
            self.done.release()


class _Pool:
    """Daemon worker threads, started as needed up to ``size``.

    Not ``concurrent.futures``: its threads are joined at interpreter exit, so one hung
    model call would keep the serving process from exiting.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # idle workers minus queued calls

    def submit(self, call: _Call) -> None:
        with self._lock:
            self._idle -= 1
            if self._idle < 0 and self._threads < self._size:
                self._threads += 1
                self._idle += 1  # the new worker takes this call
                threading.Thread(
                    target=self._work, name=f"{self._name}-{self._threads}", daemon=True
                ).start()
        self._queue.put(call)

    def _work(self) -> None:
        get = self._queue.get
        while True:
            get().run()
            with self._lock:
                self._idle += 1
