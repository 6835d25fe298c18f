"""The guard's worker threads: a model call handed to a worker, waited for with a timeout,
abandoned (never killed) when it takes too long. Standard library only."""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Call", "Pool"]


class Call:
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


class Pool:
    """Daemon worker threads, started as needed up to ``size``.

    Not ``concurrent.futures``: its threads are joined at interpreter exit, so one hung
    model call would keep the serving process from exiting.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # idle workers minus queued calls

    def submit(self, call: Call) -> None:
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
