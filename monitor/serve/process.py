"""``mqm serve``: the HTTP API and the scheduler in one process.

The API (``monitor.serve.api``) runs under uvicorn in the main thread; the scheduler
(``monitor.serve.scheduler``) runs its jobs in a thread pool beside it, started once the API
listens (a replica that cannot bind its port runs no checks). ``--no-scheduler`` makes
an API-only replica. Requests are not logged: every serving replica polls its flag.

Stopping. On SIGTERM or SIGINT the scheduler stops taking new work and the check in
flight (if any) finishes and is stored; meanwhile the API still answers, with
``/readyz`` failing (scheduler not running) so that load balancers drain this
replica. Then the scheduler gives up the lead, uvicorn closes (waiting at most
``GRACEFUL_SECONDS`` for open requests) and the process exits with status 0. A second
SIGTERM or SIGINT exits at once with status 128 + the signal number: the check in
flight is abandoned, and as a run is stored in one transaction, nothing of it is
written. A SIGKILL does the same without asking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

from monitor.config import Config
from monitor.errors import MonitorError

if TYPE_CHECKING:
    import uvicorn

    from monitor.serve.scheduler import MonitorScheduler
    from monitor.store.db import Engine

__all__ = ["GRACEFUL_SECONDS", "serve"]

GRACEFUL_SECONDS = 10
_log = logging.getLogger("mqm.service")


def _configure_logging() -> None:
    """mqm's and APScheduler's messages on standard error, beside uvicorn's own."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name, level in (("mqm", logging.INFO), ("apscheduler", logging.WARNING)):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = False


def _server_class() -> Callable[[uvicorn.Config, MonitorScheduler | None], uvicorn.Server]:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn, with a shutdown that drains the scheduler first and exits 0."""

        def __init__(self, config: uvicorn.Config, scheduler: MonitorScheduler | None) -> None:
            super().__init__(config)
            self.scheduler = scheduler
            self.signals = 0

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            # Only once the API listens: a replica that cannot bind runs no checks.
            if self.scheduler is not None and not self.should_exit:
                await asyncio.to_thread(self.scheduler.start)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn's own re-raises the signal after shutting down, so that SIGTERM
            # would end the process "killed by signal"; a drained stop is a clean exit.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            originals = {sig: signal.signal(sig, self.handle_exit)
                         for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self.signals += 1
            name = signal.Signals(sig).name
            if self.signals > 1:
                _log.warning("mqm: %s again: exiting now; a check in flight is abandoned "
                             "(its transaction is rolled back)", name)
                os._exit(128 + sig)
            _log.info("mqm: %s: stopping (a running check finishes first; %s again to "
                      "abandon it)", name, name)
            # Not in the handler: draining waits for a check, and the event loop must
            # keep serving meanwhile.
            threading.Thread(target=self._drain, name="mqm-drain", daemon=True).start()

        def _drain(self) -> None:
            try:
                if self.scheduler is not None:
                    self.scheduler.shutdown(wait=True)
            except Exception:
                _log.exception("mqm: stopping the scheduler failed")
            finally:
                self.should_exit = True

    return Server


def serve(
    config: Config,
    *,
    scheduler: bool = True,
    host: str | None = None,
    port: int | None = None,
    engine: Engine | None = None,
) -> int:
    """Run the API (and, unless ``scheduler`` is false, the scheduler) until stopped.

    ``host`` and ``port`` default to ``config.serve``. ``engine`` defaults to one on
    ``config.database_url``, whose schema must be current (an empty database is
    created). Returns the exit status: 0 after SIGTERM or SIGINT. Raises
    ``MonitorError`` when the API cannot listen or the scheduler cannot start.
    """
    import uvicorn

    from monitor.serve.api import create_app
    from monitor.serve.scheduler import MonitorScheduler

    _configure_logging()
    if engine is None:
        from monitor.store.db import create_engine, ensure_schema

        engine = create_engine(config.database_url)
        ensure_schema(engine)
    host = host if host is not None else config.serve.host
    port = port if port is not None else config.serve.port
    sched = MonitorScheduler(engine, config) if scheduler else None
    app = create_app(engine, config, scheduler=sched)
    server = _server_class()(
        uvicorn.Config(app, host=host, port=port, log_level="info",
                       # Every serving replica polls its flag: one log line per poll
                       # would drown everything else.
                       access_log=False, timeout_graceful_shutdown=GRACEFUL_SECONDS),
        sched,
    )
    try:
        # Our handlers from the start: a SIGTERM that arrives while uvicorn is still
        # starting drains the same way.
        with server.capture_signals():
            server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot bind, after logging why
        if exc.code not in (0, None):
            raise MonitorError(f"the API could not listen on {host}:{port} "
                               "(see the message above)") from None
    finally:
        if sched is not None:
            sched.shutdown(wait=True)
        engine.dispose()
    return 0
