"""The HTTP API of ``mqm serve``: health, readiness, metrics, models, runs, the fallback flag.

``create_app(engine, config, scheduler=..., registry=...)`` builds it; ``mqm serve`` runs
it under uvicorn. Reading is open to anyone; forcing or clearing the fallback flag needs
``Authorization: Bearer <MQM_API_TOKEN>``, and without that variable the write endpoints
are refused.

Why FastAPI: it is the best known ASGI framework for Python services, and the OpenAPI
description the issue asks for comes out of the typed routes and pydantic models (already
our config's dependency), so the description cannot drift from the code and schemathesis
tests the real thing. It runs on Starlette, so a hot route can still return pre-encoded
bytes and skip serialization. Its cost is the import (about 0.3 s), paid only by
``mqm serve``.

The flag endpoint is the hot path: every serving replica polls it. Reading the store on
each request costs about 470 us of CPU (about 2,100 requests/s on one core, p99 over
30 ms), so each model's flag document is cached, encoded, for at most ``flag_ttl`` seconds
(default 1): every replica still serves what the store says within a second, and a write
through this API replaces the cached document at once. The handler is ``async``: a cache
hit does no I/O, and a sync handler pays a thread hand-off per request (180 against 110 us
of CPU) and waits for the GIL behind the event loop (p99 45 ms against 3 ms;
``bench/api.py``). The one refresh per second runs in a worker thread.

Errors: ``MonitorError`` and the database's connection errors are mapped to HTTP here
only: an unknown model is 404, an unreachable store 503. Bad input never reaches the
store: the request models refuse what PostgreSQL or the policy would (NUL characters,
out-of-range times, ids beyond 64 bits) with 422.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at
# definition time, and some name types local to create_app.
import hmac
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Protocol

import anyio
import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from monitor import __version__
from monitor.config import Config
from monitor.errors import DatabaseError, MonitorError, UnknownModelError, first_line
from monitor.fallback.flag import MAX_ACTOR_LENGTH, clear_override, flag_document, set_override
from monitor.policy import SUCCESSFUL_STATUSES
from monitor.store.tables import check_runs, run_metrics
from monitor.times import aware, utc

__all__ = ["DEFAULT_ACTOR", "ENV_TOKEN", "FlagCache", "SchedulerStatus", "create_app"]

ENV_TOKEN = "MQM_API_TOKEN"
DEFAULT_ACTOR = "api"  # "by" of an override set through the API without one
MAX_REASON_LENGTH = 2000
MAX_BODY = 64 * 1024  # an override is a few hundred bytes
MAX_ID = 2**63 - 1  # BIGINT on PostgreSQL, INTEGER on SQLite: larger ids overflow the driver
_NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL

_log = logging.getLogger("mqm.api")


class SchedulerStatus(Protocol):
    """What the API needs of the scheduler (``monitor.serve.scheduler``).

    ``status()`` returns at least ``{"running": bool, "leader": bool}``; a replica that
    runs but is not the leader is healthy (another replica holds the lock). Whatever it
    raises makes the readiness check fail.
    """

    def status(self) -> dict[str, Any]: ...


# --- request and response models (the OpenAPI description is built from these) --------


class ErrorBody(BaseModel):
    detail: str = Field(description="What went wrong, naming the model or run.")


class Health(BaseModel):
    status: Literal["ok"]


class Check(BaseModel):
    ok: bool
    detail: str


class SchedulerCheck(Check):
    running: bool | None = Field(description="Null when this process runs no scheduler.")
    leader: bool | None


class ModelFreshness(Check):
    last_success_at: datetime | None = Field(
        description="When the model's last successful check run (ok, warn or critical) "
        "finished; null: never.")
    age_seconds: float | None
    max_age_seconds: float


class FreshnessCheck(Check):
    models: dict[str, ModelFreshness]


class ReadyChecks(BaseModel):
    database: Check
    scheduler: SchedulerCheck
    freshness: FreshnessCheck


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: ReadyChecks


class FlagDocument(BaseModel):
    """The fallback flag as serving reads it (the same document as ``<model>.json``)."""

    model: str
    active: bool = Field(description="True: serve the default prediction instead of the model.")
    source: Literal["auto", "manual"]
    reason: str | None
    since: datetime | None = Field(description="When the served value last changed.")
    expires_at: datetime | None = Field(description="When a manual override ends.")
    stale: bool = Field(description="No successful check run for longer than stale_after.")
    last_success_at: datetime | None
    default_prediction: Any = Field(description="The configured safe answer (any JSON).")
    updated_at: datetime


class OverrideRequest(BaseModel):
    """Force the flag on (``active: true``) or off until ``until`` or until cleared."""

    model_config = ConfigDict(extra="forbid")

    active: bool
    until: datetime | None = Field(
        None, description="When the override ends (ISO 8601; without a zone, UTC); null: "
        "until cleared. Must be in the future.")
    reason: str | None = Field(None, max_length=MAX_REASON_LENGTH, pattern=_NO_NUL)
    by: str | None = Field(
        None, max_length=MAX_ACTOR_LENGTH, pattern=_NO_NUL,
        description=f"Who does it, for the audit trail (default: {DEFAULT_ACTOR!r}).")

    @field_validator("until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            return utc(value)
        except OverflowError:
            raise ValueError("is out of range once converted to UTC") from None

    @field_validator("reason", "by")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        return _utf8(value)


class ClearParams(BaseModel):
    """Query of ``DELETE .../fallback``. An unknown parameter is refused: a misspelt
    ``reason`` must not vanish from the audit trail unnoticed."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=MAX_REASON_LENGTH, pattern=_NO_NUL,
                               description="Why, for the audit trail.")
    by: str | None = Field(None, max_length=MAX_ACTOR_LENGTH, pattern=_NO_NUL,
                           description=f"Who does it (default: {DEFAULT_ACTOR!r}).")

    @field_validator("reason", "by")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        return _utf8(value)


class RunWindow(BaseModel):
    start: datetime
    end: datetime


class LatestRun(BaseModel):
    id: int
    status: str
    window: RunWindow
    finished_at: datetime


class ModelInfo(BaseModel):
    name: str
    window_seconds: float
    latest_run: LatestRun | None = Field(description="The newest stored check run; null: none.")
    fallback_active: bool
    fallback_stale: bool


class ModelList(BaseModel):
    models: list[ModelInfo]


class RunSummary(BaseModel):
    id: int
    model: str
    kind: str = Field(description="check (every check) or schema (the schema check alone).")
    status: str = Field(description="ok, warn, critical, insufficient_data or error.")
    window: RunWindow
    rows: int
    reasons: list[str]
    recomputes: int | None = Field(description="The run this one re-judged (late labels).")
    config_hash: str
    reference_version: str | None
    started_at: datetime
    finished_at: datetime


class RunPage(BaseModel):
    model: str
    runs: list[RunSummary] = Field(description="Newest first.")
    next: int | None = Field(description="Pass as ?before= for the next page; null: no more.")


class MetricValue(BaseModel):
    check: str
    metric: str
    feature: str | None = Field(description="Null for a whole-window figure.")
    value: float | None


class RunDetail(RunSummary):
    summary: dict[str, Any] = Field(description="The run as stored (`mqm check --json`).")
    metrics: list[MetricValue]


def _utf8(value: str | None) -> str | None:
    # A lone surrogate ("\ud800" in JSON) parses, but no database driver can encode it.
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text") from None
    return value


# --- the flag cache ------------------------------------------------------------------


class FlagCache:
    """Each model's flag document, encoded, read from the store at most every ``ttl`` s.

    ``fresh(model)`` is the hot path: a dict lookup and a clock read. ``refresh(model)``
    reads the store (one thread per model at a time; the others wait and reuse its
    result) and may raise what ``flag_document`` raises.
    """

    def __init__(self, engine: Engine, config: Config, *, ttl: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._config = config
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, dict[str, Any], bytes]] = {}
        self._locks = {name: threading.Lock() for name in config.models}

    def fresh(self, model: str) -> bytes | None:
        entry = self._entries.get(model)
        if entry is not None and self._clock() < entry[0]:
            return entry[2]
        return None

    def document(self, model: str) -> dict[str, Any]:
        """The cached document, refreshed first if it is too old."""
        entry = self._entries.get(model)
        if entry is not None and self._clock() < entry[0]:
            return entry[1]
        self.refresh(model)
        return self._entries[model][1]

    def refresh(self, model: str) -> bytes:
        self._config.model(model)  # UnknownModelError before taking any lock
        with self._locks[model]:
            body = self.fresh(model)
            if body is None:
                body = self.put(model, flag_document(self._engine, self._config, model))
            return body

    def put(self, model: str, document: dict[str, Any]) -> bytes:
        """Serve ``document`` from now on (a write through the API just returned it)."""
        body = json.dumps(document, separators=(",", ":")).encode()
        self._entries[model] = (self._clock() + self._ttl, document, body)
        return body


# --- helpers ---------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such figures are served as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _summary_of(row: Any) -> dict[str, Any]:
    summary = row.summary if isinstance(row.summary, dict) else {}
    recomputes = summary.get("recomputes")
    return {
        "id": row.id, "model": row.model, "kind": row.kind, "status": row.status,
        "window": {"start": row.window_start, "end": row.window_end}, "rows": row.rows,
        "reasons": [str(r) for r in summary.get("reasons") or ()],
        "recomputes": recomputes if isinstance(recomputes, int) else None,
        "config_hash": row.config_hash, "reference_version": row.reference_version,
        "started_at": row.started_at, "finished_at": row.finished_at,
    }


def _json_body(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


def _validation_error(field: str, message: str, value: Any) -> RequestValidationError:
    """A 422 shaped as FastAPI's own, so that clients parse one error format."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", field),
                                    "msg": message, "input": value}])


def _error(status: int, description: str, **extra: Any) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": description, **extra}}


_UNKNOWN = _error(404, "The config declares no such model.")
_STORE_DOWN = _error(503, "The store cannot be reached.")
_BAD_BODY = {
    **_error(400, "The body is not JSON (or not UTF-8)."),
    **_error(413, "The body is larger than 64 KiB."),
}
_AUTH = {
    **_error(401, "Missing or wrong bearer token.",
             headers={"WWW-Authenticate": {"schema": {"type": "string"},
                                           "description": "Bearer"}}),
    **_error(403, f"Writes are disabled: {ENV_TOKEN} is not set."),
}


# --- the app ---------------------------------------------------------------------------


def create_app(
    engine: Engine,
    config: Config,
    *,
    scheduler: SchedulerStatus | None = None,
    registry: Any = None,
    flag_ttl: float = 1.0,
    ready_timeout: float = 2.0,
) -> FastAPI:
    """The API over ``engine``'s store for ``config``'s models.

    ``scheduler``: None in an API-only replica (``mqm serve --no-scheduler``), else an
    object with ``status()`` (``SchedulerStatus``). ``registry``: the
    ``prometheus_client.CollectorRegistry`` served at ``/metrics`` (default:
    ``monitor.serve.metrics.build_registry(engine, config)``). ``MQM_API_TOKEN`` is read now.
    ``flag_ttl``: the most seconds a served flag lags the store. ``ready_timeout``: the
    most seconds ``/readyz`` waits for the database.
    """
    if registry is None:
        from monitor.serve.metrics import build_registry  # the collector's imports only if served

        registry = build_registry(engine, config)
    token = os.environ.get(ENV_TOKEN) or None
    cache = FlagCache(engine, config, ttl=flag_ttl)
    model_names = list(config.models)
    # The config's names are the examples, so a schema-driven client (schemathesis) also
    # reaches the real model and not only 404s.
    ModelName = Annotated[str, Path(description="A model the config declares.",
                                    examples=model_names or None)]

    app = FastAPI(
        title="mqm",
        version=__version__,
        description="The model-quality monitor: health, readiness, metrics, check runs and "
        "each model's fallback flag. Writes need `Authorization: Bearer <MQM_API_TOKEN>`.",
    )
    app.state.flag_cache = cache
    # /readyz forgives models that never ran until the service is this old.
    app.state.started_at = datetime.now(UTC)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own handler echoes the input with ensure_ascii=False and
        # allow_nan=False, so a lone surrogate or a NaN in the body became a 500.
        detail = _finite(jsonable_encoder(exc.errors()))
        return Response(json.dumps({"detail": detail}, ensure_ascii=True),
                        status_code=422, media_type="application/json")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # Starlette names only the first route of the path in Allow; the flag's
            # GET, PUT and DELETE are three routes.
            allowed = {m for route in app.router.routes if isinstance(route, APIRoute)
                       and route.matches(request.scope)[0] is not Match.NONE
                       for m in route.methods or ()}
            exc = StarletteHTTPException(405, exc.detail, headers={
                **(exc.headers or {}), "Allow": ", ".join(sorted(allowed))})
        return await http_exception_handler(request, exc)

    @app.exception_handler(UnknownModelError)
    async def _unknown_model(request: Request, exc: UnknownModelError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(DatabaseError)
    @app.exception_handler(sa.exc.OperationalError)
    @app.exception_handler(sa.exc.InterfaceError)
    async def _store_down(request: Request, exc: Exception) -> JSONResponse:
        _log.warning("mqm api: %s %s: store unreachable: %s", request.method,
                     request.url.path, first_line(exc))
        return JSONResponse({"detail": f"the store cannot be reached: {first_line(exc)}"},
                            status_code=503)

    @app.exception_handler(MonitorError)
    async def _monitor_error(request: Request, exc: MonitorError) -> JSONResponse:
        # Bad input is refused before it gets here; what is left is the server's fault
        # (e.g. the flag file could not be written).
        _log.error("mqm api: %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=500)

    bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                        description=f"The token in {ENV_TOKEN}.")

    async def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if token is None:
            raise HTTPException(403, f"writes are disabled: set {ENV_TOKEN} on the server "
                                "to allow changing the fallback flag")
        given = b"" if credentials is None else credentials.credentials.encode("latin-1")
        # Constant time: a byte-by-byte comparison would leak the token through timing.
        if credentials is None or not hmac.compare_digest(given, token.encode()):
            raise HTTPException(401, "a valid bearer token is required (Authorization: "
                                "Bearer <MQM_API_TOKEN>)",
                                headers={"WWW-Authenticate": "Bearer"})

    # --- health ---------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, tags=["health"],
             summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def _freshness(conn: sa.Connection, now: datetime) -> FreshnessCheck:
        query = (
            sa.select(check_runs.c.model, sa.func.max(check_runs.c.finished_at))
            .where(check_runs.c.model.in_(model_names), check_runs.c.kind == "check",
                   check_runs.c.status.in_(sorted(SUCCESSFUL_STATUSES)))
            .group_by(check_runs.c.model)
        )
        last = {m: aware(v) for m, v in conn.execute(query)}
        up = now - app.state.started_at
        models = {}
        for name, model_cfg in config.models.items():
            max_age = config.serve.ready_max_age or 3 * model_cfg.window
            at = last.get(name)
            if at is None:
                ok = up <= max_age
                detail = (f"never run; tolerated while the service is younger than "
                          f"{_span(max_age)} (up {_span(up)})")
                age = None
            else:
                age = now - at
                ok = age <= max_age
                detail = f"last successful run {_span(age)} ago (limit {_span(max_age)})"
            models[name] = ModelFreshness(
                ok=ok, detail=detail, last_success_at=at, max_age_seconds=max_age.total_seconds(),
                age_seconds=None if age is None else age.total_seconds())
        stale = [m for m, f in models.items() if not f.ok]
        return FreshnessCheck(ok=not stale, models=models,
                              detail=f"stale: {', '.join(stale)}" if stale else "all fresh")

    def _store_checks() -> tuple[Check, FreshnessCheck]:
        now = datetime.now(UTC)
        started = time.perf_counter()
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
                database = Check(ok=True, detail=f"SELECT 1 answered in "
                                 f"{(time.perf_counter() - started) * 1000:.1f} ms")
                return database, _freshness(conn, now)
        except sa.exc.SQLAlchemyError as exc:
            _log.warning("mqm api: readiness: %s", first_line(exc))
            return (Check(ok=False, detail=f"cannot reach the store: {first_line(exc)}"),
                    FreshnessCheck(ok=False, detail="unknown: the store cannot be reached",
                                   models={}))

    def _scheduler_check() -> SchedulerCheck:
        if scheduler is None:
            return SchedulerCheck(ok=True, running=None, leader=None,
                                  detail="no scheduler in this process (API only)")
        try:
            status = scheduler.status()
            running, leader = bool(status["running"]), bool(status["leader"])
        except Exception as exc:  # a broken scheduler is a failed check, not a 500
            return SchedulerCheck(ok=False, running=None, leader=None,
                                  detail=f"status() failed: {exc!r}")
        if not running:
            detail = "not running"
        elif leader:
            detail = "running, leader: checks run in this process"
        else:
            detail = "running, standby: another replica holds the lock"
        return SchedulerCheck(ok=running, running=running, leader=leader, detail=detail)

    @app.get("/readyz", response_model=Readiness, tags=["health"],
             summary="Ready: database reachable, scheduler alive, every model's runs fresh",
             responses={503: {"model": Readiness, "description": "A check failed."}})
    async def readyz() -> JSONResponse:
        unanswered = f"no answer within {ready_timeout:g} s"
        results: dict[str, Any] = {
            "store": (Check(ok=False, detail=unanswered),
                      FreshnessCheck(ok=False, detail="unknown: the store did not answer",
                                     models={})),
            "scheduler": SchedulerCheck(ok=False, running=None, leader=None,
                                        detail=f"status(): {unanswered}"),
        }

        async def in_thread(key: str, work: Callable[[], Any]) -> None:
            # Both read the store: a hung database must not hang the probe or the event
            # loop. An abandoned thread ends on its own.
            with anyio.move_on_after(ready_timeout):
                results[key] = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)

        async with anyio.create_task_group() as group:
            group.start_soon(in_thread, "store", _store_checks)
            group.start_soon(in_thread, "scheduler", _scheduler_check)
        (database, freshness), sched = results["store"], results["scheduler"]
        ok = database.ok and sched.ok and freshness.ok
        body = Readiness(status="ready" if ok else "not_ready",
                         checks=ReadyChecks(database=database, scheduler=sched,
                                            freshness=freshness))
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics",
             response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition format."},
                        **_STORE_DOWN})
    def metrics() -> Response:
        # Sync: the collectors read the store at scrape time, in a worker thread.
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # --- models and runs ------------------------------------------------------------

    @app.get("/v1/models", response_model=ModelList, tags=["models"],
             summary="Every configured model with its latest check run and flag",
             responses=_STORE_DOWN)
    def list_models() -> dict[str, Any]:
        newest = (sa.select(sa.func.max(check_runs.c.id))
                  .where(check_runs.c.model.in_(model_names), check_runs.c.kind == "check")
                  .group_by(check_runs.c.model))
        with engine.connect() as conn:
            rows = {r.model: r for r in conn.execute(
                sa.select(check_runs).where(check_runs.c.id.in_(newest)))}
        out = []
        for name, model_cfg in config.models.items():
            row = rows.get(name)
            doc = cache.document(name)
            out.append({
                "name": name, "window_seconds": model_cfg.window.total_seconds(),
                "latest_run": None if row is None else {
                    "id": row.id, "status": row.status, "finished_at": row.finished_at,
                    "window": {"start": row.window_start, "end": row.window_end}},
                "fallback_active": doc["active"], "fallback_stale": doc["stale"],
            })
        return {"models": out}

    @app.get("/v1/models/{model}/runs", response_model=RunPage, tags=["models"],
             summary="A model's check runs, newest first, a page at a time",
             responses={**_UNKNOWN, **_STORE_DOWN})
    def list_runs(
        model: ModelName,
        limit: Annotated[int, Query(ge=1, le=500, description="Runs per page.")] = 50,
        before: Annotated[int | None, Query(ge=1, le=MAX_ID, description=(
            "Only runs with a smaller id: the `next` of the previous page."))] = None,
        kind: Annotated[Literal["check", "schema"] | None, Query(
            description="Only runs of this kind.")] = None,
    ) -> dict[str, Any]:
        config.model(model)
        query = sa.select(check_runs).where(check_runs.c.model == model)
        if before is not None:
            query = query.where(check_runs.c.id < before)
        if kind is not None:
            query = query.where(check_runs.c.kind == kind)
        # One more than asked: whether it exists says if there is a next page.
        query = query.order_by(check_runs.c.id.desc()).limit(limit + 1)
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        page = rows[:limit]
        return {"model": model, "runs": [_summary_of(r) for r in page],
                "next": page[-1].id if len(rows) > limit else None}

    @app.get("/v1/runs/{run_id}", response_model=RunDetail, tags=["runs"],
             summary="One check run: its summary as stored and its metrics",
             responses={404: {"model": ErrorBody, "description": "No such run."},
                        **_STORE_DOWN})
    def get_run(run_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> dict[str, Any]:
        with engine.connect() as conn:
            row = conn.execute(sa.select(check_runs).where(check_runs.c.id == run_id)).first()
            if row is None:
                raise HTTPException(404, f"no check run with id {run_id}")
            figures = conn.execute(sa.select(run_metrics).where(run_metrics.c.run_id == run_id)
                                   .order_by(run_metrics.c.id)).all()
        return {
            **_summary_of(row),
            "summary": _finite(row.summary if isinstance(row.summary, dict) else {}),
            "metrics": [{"check": f.check_name, "metric": f.metric,
                         "feature": f.feature or None, "value": _finite(f.value)}
                        for f in figures],
        }

    # --- the fallback flag ------------------------------------------------------------

    @app.get("/v1/models/{model}/fallback", response_model=FlagDocument, tags=["fallback"],
             summary="The model's fallback flag, as serving reads it",
             responses={**_UNKNOWN, **_STORE_DOWN})
    async def get_fallback(model: ModelName) -> Response:
        body = cache.fresh(model)
        if body is None:
            if model not in config.models:
                raise UnknownModelError(model, model_names)
            body = await anyio.to_thread.run_sync(cache.refresh, model)
        return _json_body(body)

    @app.put("/v1/models/{model}/fallback", response_model=FlagDocument, tags=["fallback"],
             summary="Force the flag on or off (a manual override)",
             dependencies=[Depends(require_token)], max_body_size=MAX_BODY,
             responses={**_AUTH, **_UNKNOWN, **_STORE_DOWN, **_BAD_BODY})
    def put_fallback(model: ModelName, override: OverrideRequest) -> Response:
        config.model(model)
        now = datetime.now(UTC)
        # The store keeps whole seconds; an expiry that rounds down to now is in the past.
        if override.until is not None and override.until.replace(microsecond=0) <= now:
            raise _validation_error("until", f"must be in the future (now is "
                                    f"{now.isoformat(timespec='seconds')})",
                                    override.until.isoformat())
        doc = set_override(engine, config, model, active=override.active,
                           by=(override.by or "").strip() or DEFAULT_ACTOR,
                           reason=override.reason, until=override.until, now=now)
        return _json_body(cache.put(model, doc))

    @app.delete("/v1/models/{model}/fallback", response_model=FlagDocument,
                tags=["fallback"], summary="Clear the override: the automatic state is "
                "served again", dependencies=[Depends(require_token)],
                responses={**_AUTH, **_UNKNOWN, **_STORE_DOWN})
    def delete_fallback(model: ModelName, params: Annotated[ClearParams, Query()]) -> Response:
        config.model(model)
        doc = clear_override(engine, config, model,
                             by=(params.by or "").strip() or DEFAULT_ACTOR, reason=params.reason)
        return _json_body(cache.put(model, doc))

    return app



def _span(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if abs(seconds) < 120:
        return f"{seconds} s"
    if abs(seconds) < 7200:
        return f"{seconds // 60} min"
    if abs(seconds) < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
