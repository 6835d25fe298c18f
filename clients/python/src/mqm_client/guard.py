"""``guard``: serve a safe default while the monitor says the model is bad.

``guard`` wraps a predict function: it answers with the default prediction when the flag is
on, when predict raises, takes too long or too many calls are in flight, records which
path answered, and hands every call to an ``InferenceLogger`` with the model's own
prediction (never the default; while the flag is on, from a shadow call of the model in
the background). Failures of the monitor or of the logger never reach the caller.

Only the standard library is imported here.
"""

from __future__ import annotations

import contextvars
import functools
import inspect  # already loaded by dataclasses
import itertools
import time
from collections.abc import Callable
from typing import Any, overload

from mqm_client.counters import peek
from mqm_client.flag import MISSING as _MISSING
from mqm_client.flag import FallbackFlag
from mqm_client.pool import Call, Pool
from mqm_client.protocols import Guarded, GuardLogger

__all__ = ["PATHS", "SHADOW_IN_FLIGHT", "GuardLogger", "Guarded", "guard"]

PATHS = ("model", "flag", "error", "timeout", "overload", "raised")

_POOL_SIZE = 32  # worker threads of a guard with a timeout and no max_in_flight
SHADOW_IN_FLIGHT = 4  # default bound on a guard's shadow calls running at once


class _NoFlag:
    """Stands in for a missing flag, so that the hot path has no ``flag is None`` test."""

    _active = False

    def _default_value(self) -> Any:
        return _MISSING


@overload
def guard(
    fn: Callable[..., Any],
    /,
    *,
    default: Any = ...,
    flag: FallbackFlag | None = ...,
    timeout: float | None = ...,
    max_in_flight: int | None = ...,
    logger: GuardLogger | None = ...,
    features_of: Callable[..., Any] | None = ...,
    request_id: Callable[..., Any] | None = ...,
    timestamp: Callable[..., Any] | None = ...,
    prediction: Callable[[Any], Any] | None = ...,
    probabilities: Callable[[Any], Any] | None = ...,
    shadow: bool = ...,
    max_shadow_in_flight: int = ...,
) -> Guarded: ...


@overload
def guard(
    fn: None = ...,
    /,
    *,
    default: Any = ...,
    flag: FallbackFlag | None = ...,
    timeout: float | None = ...,
    max_in_flight: int | None = ...,
    logger: GuardLogger | None = ...,
    features_of: Callable[..., Any] | None = ...,
    request_id: Callable[..., Any] | None = ...,
    timestamp: Callable[..., Any] | None = ...,
    prediction: Callable[[Any], Any] | None = ...,
    probabilities: Callable[[Any], Any] | None = ...,
    shadow: bool = ...,
    max_shadow_in_flight: int = ...,
) -> Callable[[Callable[..., Any]], Guarded]: ...


def guard(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    default: Any = _MISSING,
    flag: FallbackFlag | None = None,
    timeout: float | None = None,
    max_in_flight: int | None = None,
    logger: GuardLogger | None = None,
    features_of: Callable[..., Any] | None = None,
    request_id: Callable[..., Any] | None = None,
    timestamp: Callable[..., Any] | None = None,
    prediction: Callable[[Any], Any] | None = None,
    probabilities: Callable[[Any], Any] | None = None,
    shadow: bool = True,
    max_shadow_in_flight: int = SHADOW_IN_FLIGHT,
) -> Guarded | Callable[[Callable[..., Any]], Guarded]:
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
    value), or ``features_of(*args, **kwargs)``. What the monitor needs beyond them comes
    from callables, so that a guarded service's labels join and its estimated accuracy
    and ROC AUC work without a wrapper around the logger:

    - ``request_id(*args, **kwargs)``: the request's id, which labels join on (else the
      logger makes one up); ``timestamp(*args, **kwargs)``: the inference time (epoch
      seconds; else now). Both are called on the caller's thread, at the call, so a
      context variable set by the caller's framework is seen.
    - ``prediction(result)``: what to log as the prediction when the model's result is
      more than that (e.g. ``lambda r: r["label"]``); ``probabilities(result)``: the
      class probabilities to log (a mapping of class to probability, e.g.
      ``lambda r: r["proba"]``). Applied to the model's own result only (a shadow call's
      included), never to a default.

    Each is passed to ``logger.log`` only when given, so a logger of one's own needs
    those keywords only if it is given them. A logger, ``features_of`` or one of these
    callables failing is swallowed and counted as ``log_failures`` (the call is not
    logged). ``.stats()`` also counts ``shadow`` (shadow
    calls started) and ``shadow_skipped``, and gives ``shadow_in_flight`` (None when the
    guard makes no shadow calls).
    """
    if fn is None:
        return functools.partial(
            guard, default=default, flag=flag, timeout=timeout, max_in_flight=max_in_flight,
            logger=logger, features_of=features_of, request_id=request_id,
            timestamp=timestamp, prediction=prediction, probabilities=probabilities,
            shadow=shadow, max_shadow_in_flight=max_shadow_in_flight,
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
    for name, hook in (("features_of", features_of), ("request_id", request_id),
                       ("timestamp", timestamp), ("prediction", prediction),
                       ("probabilities", probabilities)):
        if hook is not None and not callable(hook):
            raise TypeError(f"{name} must be a callable, got {hook!r}")
    shadows = (max_shadow_in_flight if shadow and logger is not None and flag is not None
               else None)
    return _build(fn, default, flag, timeout, max_in_flight, logger, features_of, shadows,
                  _LogHooks(request_id, timestamp, prediction, probabilities))


class _LogHooks:
    """What ``guard`` logs beyond the features: fields taken from the call's arguments
    (at the call) and from the model's result."""

    __slots__ = ("call_fields", "result_fields")

    def __init__(self, request_id: Callable[..., Any] | None,
                 timestamp: Callable[..., Any] | None,
                 prediction: Callable[[Any], Any] | None,
                 probabilities: Callable[[Any], Any] | None) -> None:
        of_call = [(k, f) for k, f in (("request_id", request_id), ("timestamp", timestamp))
                   if f is not None]

        def call_fields(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            return {key: hook(*args, **kwargs) for key, hook in of_call}

        def result_fields(result: Any) -> tuple[Any, dict[str, Any]]:
            """(the prediction to log, the other fields) of the model's own result."""
            logged = result if prediction is None else prediction(result)
            if probabilities is None:
                return logged, {}
            return logged, {"probabilities": probabilities(result)}

        self.call_fields = call_fields
        self.result_fields = result_fields


def _build(
    fn: Callable[..., Any],
    default: Any,
    flag: FallbackFlag | None,
    timeout: float | None,
    max_in_flight: int | None,
    logger: GuardLogger | None,
    features_of: Callable[..., Any] | None,
    shadows: int | None,
    hooks: _LogHooks,
) -> Guarded:
    fl: FallbackFlag | _NoFlag = flag if flag is not None else _NoFlag()
    call_fields, result_fields = hooks.call_fields, hooks.result_fields
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
    pool = None if timeout is None else Pool(
        max_in_flight or _POOL_SIZE, f"mqm-guard-{getattr(fn, '__name__', 'fn')}"
    )
    # Shadow calls (flag on, logged): a pool and tokens of their own, so that they never
    # hold what answering calls need; the tokens bound them, so nothing queues there.
    shadow_tokens: list[None] | None = None if shadows is None else [None] * shadows
    shadow_pool = None if shadows is None else Pool(
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

    def run_model(
        args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, str | None, Exception | None]:
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
        call = Call(fn, args, kwargs, tokens if holds_token else None)
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

    def log_shadow(features: Any, fields: dict[str, Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> None:
        """A shadow call, on a shadow worker: run the model, log what it said."""
        started = clock()
        message: str | None = None
        answered = True
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            result, message, answered = None, f"{type(exc).__name__}: {exc}", False
        took = clock() - started
        if message is None and timeout is not None and took > timeout:
            message = f"timed out after {timeout} s (shadow call took {took:.3f} s)"
        try:
            assert logger is not None  # shadow calls are made only for a guard with a logger
            if answered:
                result, more = result_fields(result)
                fields = {**fields, **more}
            logger.log(features, result, latency_ms=took * 1000.0, error=message is not None,
                       error_message=message, fallback_reason="flag", **fields)
        except Exception:
            n_log_failed()

    def shadow_started(features: Any, fields: dict[str, Any], args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> bool:
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

        shadow_pool.submit(Call(  # type: ignore[union-attr]
            log_shadow, (snapshot(features), fields, tuple(map(snapshot, args)),
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
                fields = call_fields(args, kwargs)
                shadowed = (reason == "flag" and shadow_tokens is not None
                            and shadow_started(features, fields, args, kwargs))
                if not shadowed:  # else the shadow call logs it once the model has answered
                    failed = exc is not None or reason == "timeout"
                    # The model's own answer only: a default would be judged as the model's.
                    logged = None
                    if reason is None and exc is None:
                        logged, more = result_fields(result)
                        fields.update(more)
                    logger.log(
                        features,
                        logged,
                        latency_ms=(clock() - started) * 1000.0,
                        error=failed,
                        error_message=(None if not failed
                                       else f"timed out after {timeout} s" if reason == "timeout"
                                       else f"{type(exc).__name__}: {exc}"),
                        fallback_reason=reason,
                        **fields,
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
        out: dict[str, int | None] = {name: peek(c) for name, c in counters.items()}
        out["calls"] = sum(peek(counters[p]) for p in PATHS)
        out["in_flight"] = None if tokens is None else max_in_flight - len(tokens)  # type: ignore[operator]
        out["shadow_in_flight"] = (None if shadow_tokens is None
                                   else shadows - len(shadow_tokens))  # type: ignore[operator]
        return out

    wrapper = fast if logger is None and pool is None and tokens is None else full
    functools.update_wrapper(wrapper, fn)
    wrapper.stats = stats  # type: ignore[attr-defined]
    wrapper.last_path = last.get  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]

