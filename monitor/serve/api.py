"""The HTTP API of ``mqm serve``: health, readiness, metrics, models, runs, the fallback flag.

``create_app(engine, config, scheduler=..., registry=...)`` builds it; ``mqm serve`` runs
it under uvicorn. Reading is open to anyone; forcing or clearing the fallback flag needs
``Authorization: Bearer <MQM_API_TOKEN>``, and without that variable the write endpoints
are refused. Posting logs and labels takes that token or the ingest token
(``serve.ingest_token``), which can do nothing else.

Why FastAPI: it is the best known ASGI framework for Python services, and the OpenAPI
description the issue asks for comes out of the typed routes and pydantic models (already
our config's dependency), so the description cannot drift from the code and schemathesis
tests the real thing. It runs on Starlette, so a hot route can still return pre-encoded
bytes and skip serialization. Its cost is the import (about 0.3 s), paid only by
``mqm serve``.

The parts: this module holds the app and its routes; ``api_models`` the request and
response models; ``flag_cache`` the cached flag documents; ``health`` the readiness
checks. Every read goes through ``monitor.store.reads``.

The flag endpoint is the hot path: every serving replica polls it, and it answers from
``FlagCache`` (see there). The handler is ``async``: a cache hit does no I/O, and a sync
handler pays a thread hand-off per request (180 against 110 us of CPU) and waits for the
GIL behind the event loop (p99 45 ms against 3 ms; ``bench/api.py``). The one refresh
per second runs in a worker thread. Reading the flag writes no flag file.

Errors: ``MonitorError`` and the database's connection errors are mapped to HTTP here
only: an unknown model is 404, an unreachable store 503. Bad input never reaches the
store: the request models refuse what PostgreSQL or the policy would (NUL characters,
out-of-range times, ids beyond 64 bits) with 422.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at
# definition time, and some name types local to create_app.
import functools
import hmac
import json
import logging
import math
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from monitor import __version__
from monitor.config import Config
from monitor.errors import (
    DatabaseError,
    IngestError,
    MonitorError,
    UnknownModelError,
    first_line,
)
from monitor.fallback.flag import clear_override, set_override
from monitor.ingest import IngestReport, ingest_label_batch, ingest_log_batch
from monitor.results import SchemaResult, from_json
from monitor.serve.api_models import (
    AUTH,
    BAD_BODY,
    BATCH_ERRORS,
    DEFAULT_ACTOR,
    ENV_INGEST_TOKEN,
    ENV_TOKEN,
    INGEST_AUTH,
    MAX_BODY,
    MAX_ID,
    STORE_DOWN,
    UNKNOWN,
    UNKNOWN_QUERY,
    ClearParams,
    ErrorBody,
    FlagDocument,
    Health,
    IngestResult,
    ModelList,
    OverrideRequest,
    Readiness,
    RunDetail,
    RunPage,
    VersionReport,
)
from monitor.serve.batches import read_batch
from monitor.serve.flag_cache import FlagCache
from monitor.serve.health import SchedulerStatus, readiness
from monitor.store import reads
from monitor.store.db import Engine
from monitor.store.runs import RunRecord

__all__ = ["DEFAULT_ACTOR", "ENV_TOKEN", "FlagCache", "SchedulerStatus", "create_app"]

_log = logging.getLogger("mqm.api")


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


def _verdict_of(record: RunRecord) -> tuple[tuple[str, ...], int | None]:
    """The run's reasons and the run it re-judged, read from its typed document. A
    document that cannot be read back is logged and has neither; it is still served
    as stored."""
    try:
        if record.kind == "check":
            run = record.run
            assert run is not None
            return run.reasons, run.recomputes
        return from_json(SchemaResult, record.summary, "summary").reasons, None
    except (ValueError, TypeError) as exc:
        _log.warning("mqm api: run %d: its document cannot be read: %s", record.id, exc)
        return (), None


def _summary_of(record: RunRecord) -> dict[str, Any]:
    reasons, recomputes = _verdict_of(record)
    return {
        "id": record.id, "model": record.model, "kind": record.kind, "status": record.status,
        "window": {"start": record.window_start, "end": record.window_end},
        "rows": record.rows, "reasons": list(reasons), "recomputes": recomputes,
        "config_hash": record.config_hash, "reference_version": record.reference_version,
        "started_at": record.started_at, "finished_at": record.finished_at,
    }


def _json_body(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


def _validation_error(field: str, message: str, value: Any) -> RequestValidationError:
    """A 422 shaped as FastAPI's own, so that clients parse one error format."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", field),
                                    "msg": message, "input": value}])


def _refuse_unknown_query(request: Request, *allowed: str) -> None:
    """422 (as FastAPI words an unknown field) for any query parameter but ``allowed``:
    a misspelt ``?limt=5`` must not answer as if it were not there, on a read as on a
    write. Called first thing by every ``/v1`` route; the probes and /metrics are left
    alone (load balancers and Prometheus may add parameters of their own). A call rather
    than a dependency: FastAPI solves a dependency on every request, which the flag's hot
    path (no query string) should not pay for."""
    if not request.scope.get("query_string"):
        return
    unknown = [(key, value) for key, value in request.query_params.multi_items()
               if key not in allowed]
    if unknown:
        raise RequestValidationError([
            {"type": "extra_forbidden", "loc": ("query", key),
             "msg": "Extra inputs are not permitted", "input": value}
            for key, value in unknown])


def _batch_body(what: str, example: str) -> dict[str, Any]:
    """The OpenAPI request body of a posted batch: JSON lines, not a JSON document, so
    declared by hand (FastAPI would describe a typed body as one JSON object)."""
    return {"requestBody": {"required": True, "description": (
        f"One batch of {what}s: JSON lines (one JSON object per line), the rows of a "
        f"`mqm {'ingest' if what == 'log' else 'labels'}` JSON-lines file, with the same "
        "rules (see the README's Log files). Optionally gzip-compressed, with "
        "`Content-Encoding: gzip`."),
        # minLength: no body at all is a 400; a body of blank lines is an empty batch.
        "content": {"application/x-ndjson": {"schema": {"type": "string", "minLength": 1},
                                             "example": example}}}}


def _ingest_result(model: str, report: IngestReport) -> dict[str, Any]:
    return {"model": model, "rows": report.rows, "added": report.added,
            "already_stored": report.already_stored, "refused": report.bad,
            "problems": report.problems, "warnings": report.warnings,
            "unmatched": report.unmatched}


_LOG_EXAMPLE = (
    '{"request_id": "r-1", "timestamp": "2026-10-01T12:00:00Z", "age": 45, '
    '"home_ownership": "RENT", "prediction": 0, "proba_0": 0.95, "proba_1": 0.05, '
    '"latency_ms": 3.2}\n')
_LABEL_EXAMPLE = '{"request_id": "r-1", "defaulted": 0}\n'


# --- the app ---------------------------------------------------------------------------


def create_app(
    engine: Engine,
    config: Config,
    *,
    scheduler: SchedulerStatus | None = None,
    registry: Any = None,
    flag_ttl: float = 1.0,
    flag_clock: Callable[[], float] = time.monotonic,
    ready_timeout: float = 2.0,
) -> FastAPI:
    """The API over ``engine``'s store for ``config``'s models.

    ``scheduler``: None in an API-only replica (``mqm serve --no-scheduler``), else an
    object with ``status()`` (``SchedulerStatus``). ``registry``: the
    ``prometheus_client.CollectorRegistry`` served at ``/metrics`` (default:
    ``monitor.serve.metrics.build_registry(engine, config)``). ``MQM_API_TOKEN`` is read now.
    ``flag_ttl``: the most seconds a served flag lags the store, on ``flag_clock`` (tests
    move it by hand). ``ready_timeout``: the
    most seconds ``/readyz`` waits for the database.
    """
    if registry is None:
        from monitor.serve.metrics import build_registry  # the collector's imports only if served

        registry = build_registry(engine, config)
    token = os.environ.get(ENV_TOKEN) or None
    # Tokens that may post logs and labels: the write token, and the ingest token, which
    # may do nothing else (serving replicas hold it and must not change the flag).
    ingest_tokens = [t.encode() for t in (token, config.serve.ingest_token) if t]
    max_batch_bytes = config.serve.ingest_max_bytes
    max_batch_rows = config.serve.ingest_max_rows
    cache = FlagCache(engine, config, ttl=flag_ttl, clock=flag_clock)
    model_names = list(config.models)
    # The config's names are the examples, so a schema-driven client (schemathesis) also
    # reaches the real model and not only 404s.
    ModelName = Annotated[str, Path(description="A model the config declares.",
                                    examples=model_names or None)]

    app = FastAPI(
        title="mqm",
        version=__version__,
        description="The model-quality monitor: health, readiness, metrics, check runs and "
        "each model's fallback flag, and the ingest of logs and labels. Writes need "
        "`Authorization: Bearer <MQM_API_TOKEN>` (posting logs and labels: that token or "
        "the ingest token).",
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

    async def _store_down(request: Request, exc: Exception) -> JSONResponse:
        _log.warning("mqm api: %s %s: store unreachable: %s", request.method,
                     request.url.path, first_line(exc))
        return JSONResponse({"detail": f"the store cannot be reached: {first_line(exc)}"},
                            status_code=503)

    down: tuple[type[Exception], ...] = (DatabaseError, *reads.UNREACHABLE)
    for unreachable in down:
        app.add_exception_handler(unreachable, _store_down)

    @app.exception_handler(MonitorError)
    async def _monitor_error(request: Request, exc: MonitorError) -> JSONResponse:
        # Bad input is refused before it gets here; what is left is the server's fault
        # (e.g. the flag file could not be written).
        _log.error("mqm api: %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=500)

    bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                        description=f"The token in {ENV_TOKEN}; posting logs and labels "
                        f"also takes serve.ingest_token ({ENV_INGEST_TOKEN}).")

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

    async def require_ingest_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if not ingest_tokens:
            raise HTTPException(403, f"posting is disabled: set {ENV_TOKEN} or "
                                f"serve.ingest_token ({ENV_INGEST_TOKEN}) on the server")
        given = b"" if credentials is None else credentials.credentials.encode("latin-1")
        # Every token compared, in constant time: no early exit that timing could show.
        matched = [hmac.compare_digest(given, t) for t in ingest_tokens]
        if credentials is None or not any(matched):
            raise HTTPException(401, "a valid bearer token is required (Authorization: "
                                f"Bearer <{ENV_INGEST_TOKEN} or {ENV_TOKEN}>)",
                                headers={"WWW-Authenticate": "Bearer"})

    async def batch_of(request: Request) -> bytes:
        return await read_batch(
            request.stream(), encoding=request.headers.get("content-encoding"),
            declared_length=request.headers.get("content-length"),
            max_bytes=max_batch_bytes, max_rows=max_batch_rows)

    # --- health ---------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, tags=["health"],
             summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, tags=["health"],
             summary="Ready: database reachable, scheduler alive, every model's runs fresh",
             responses={503: {"model": Readiness, "description": "A check failed."}})
    async def readyz(request: Request) -> JSONResponse:
        body = await readiness(engine, config, scheduler, timeout=ready_timeout,
                               started_at=request.app.state.started_at)
        return JSONResponse(body.model_dump(mode="json"),
                            status_code=200 if body.status == "ready" else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics",
             response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition format."},
                        **STORE_DOWN})
    def metrics() -> Response:
        # Sync: the collectors read the store at scrape time, in a worker thread.
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # --- models and runs ------------------------------------------------------------

    @app.get("/v1/models", response_model=ModelList, tags=["models"],
             summary="Every configured model with its latest check run and flag",
             responses={**STORE_DOWN, **UNKNOWN_QUERY})
    def list_models(request: Request) -> dict[str, Any]:
        _refuse_unknown_query(request)
        newest = reads.newest_runs(engine, model_names)
        out = []
        for name, model_cfg in config.models.items():
            run = newest.get(name)
            doc = cache.document(name)
            out.append({
                "name": name, "window_seconds": model_cfg.window.total_seconds(),
                "latest_run": None if run is None else {
                    "id": run.id, "status": run.status, "finished_at": run.finished_at,
                    "window": {"start": run.window_start, "end": run.window_end}},
                "fallback_active": doc["active"], "fallback_stale": doc["stale"],
            })
        return {"models": out}

    @app.get("/v1/models/{model:path}/runs", response_model=RunPage, tags=["models"],
             summary="A model's check runs, newest first, a page at a time",
             responses={**UNKNOWN, **STORE_DOWN})
    def list_runs(
        request: Request,
        model: ModelName,
        limit: Annotated[int, Query(ge=1, le=500, description="Runs per page.")] = 50,
        before: Annotated[int | None, Query(ge=1, le=MAX_ID, description=(
            "Only runs with a smaller id: the `next` of the previous page."))] = None,
        kind: Annotated[Literal["check", "schema"] | None, Query(
            description="Only runs of this kind.")] = None,
    ) -> dict[str, Any]:
        _refuse_unknown_query(request, "limit", "before", "kind")
        config.model(model)
        page = reads.run_page(engine, model, limit=limit, before=before, kind=kind)
        return {"model": model, "runs": [_summary_of(r) for r in page.runs],
                "next": page.next}

    @app.get("/v1/models/{model:path}/versions", response_model=VersionReport, tags=["models"],
             summary="The model's versions over its stored runs, and the best recent one",
             responses={**UNKNOWN, **STORE_DOWN})
    def list_versions(
        request: Request,
        model: ModelName,
        since: Annotated[str | None, Query(
            description="Only windows ending after this time (ISO 8601 with an offset).",
            json_schema_extra={"format": "date-time"})] = None,
    ) -> dict[str, Any]:
        from monitor.rollback import verdict
        from monitor.store.versions import version_windows

        _refuse_unknown_query(request, "since")
        config.model(model)
        after = None
        if since is not None:
            try:
                after = datetime.fromisoformat(since.replace("Z", "+00:00"))
            except ValueError:
                after = None
            if after is None or after.tzinfo is None:
                # Numbers and times without an offset too: "0.5" is no time.
                raise RequestValidationError([{
                    "type": "value_error", "loc": ("query", "since"), "input": since,
                    "msg": "an ISO 8601 time with a UTC offset, e.g. 2026-10-09T00:00:00Z"}])
        found = verdict(version_windows(engine, model, since=after))
        return _finite({"model": model, **found.as_dict()})

    @app.get("/v1/runs/{run_id}", response_model=RunDetail, tags=["runs"],
             summary="One check run: its summary as stored and its metrics",
             responses={404: {"model": ErrorBody, "description": "No such run."},
                        **STORE_DOWN})
    def get_run(request: Request,
                run_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> dict[str, Any]:
        _refuse_unknown_query(request)
        found = reads.run_with_metrics(engine, run_id)
        if found is None:
            raise HTTPException(404, f"no check run with id {run_id}")
        record, figures = found
        return {
            **_summary_of(record),
            # As stored: the document the run wrote (``mqm check --json``), not one
            # rebuilt from the typed run.
            "summary": _finite(record.summary if isinstance(record.summary, dict) else {}),
            "metrics": [{"check": f.check, "metric": f.metric,
                         "feature": f.feature or None, "value": _finite(f.value)}
                        for f in figures],
        }

    # --- the fallback flag ------------------------------------------------------------

    @app.get("/v1/models/{model:path}/fallback", response_model=FlagDocument, tags=["fallback"],
             summary="The model's fallback flag, as serving reads it",
             responses={**UNKNOWN, **STORE_DOWN})
    async def get_fallback(request: Request, model: ModelName) -> Response:
        if request.scope["query_string"]:
            _refuse_unknown_query(request)
        body = cache.fresh(model)
        if body is None:
            if model not in config.models:
                raise UnknownModelError(model, model_names)
            body = await anyio.to_thread.run_sync(cache.refresh, model)
        return _json_body(body)

    @app.put("/v1/models/{model:path}/fallback", response_model=FlagDocument, tags=["fallback"],
             summary="Force the flag on or off (a manual override)",
             dependencies=[Depends(require_token)], max_body_size=MAX_BODY,
             responses={**AUTH, **UNKNOWN, **STORE_DOWN, **BAD_BODY})
    def put_fallback(request: Request, model: ModelName, override: OverrideRequest
                     ) -> Response:
        _refuse_unknown_query(request)
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

    @app.delete("/v1/models/{model:path}/fallback", response_model=FlagDocument,
                tags=["fallback"], summary="Clear the override: the automatic state is "
                "served again", dependencies=[Depends(require_token)],
                responses={**AUTH, **UNKNOWN, **STORE_DOWN})
    def delete_fallback(model: ModelName, params: Annotated[ClearParams, Query()]) -> Response:
        config.model(model)
        doc = clear_override(engine, config, model,
                             by=(params.by or "").strip() or DEFAULT_ACTOR, reason=params.reason)
        return _json_body(cache.put(model, doc))

    # --- ingest -------------------------------------------------------------------------
    # The rows go through monitor.ingest, the code that loads files, in a worker thread:
    # the same rules, the same report per bad row, the same idempotence on request_id.

    def load_logs(model: str, body: bytes) -> dict[str, Any]:
        from monitor.schema import load_schema

        model_cfg = config.model(model)
        report = ingest_log_batch(engine, model, load_schema(model_cfg.schema_path), body,
                                  default_version=model_cfg.version)
        return _ingest_result(model, report)

    def load_labels(model: str, body: bytes) -> dict[str, Any]:
        from monitor.schema import load_schema

        try:
            report = ingest_label_batch(engine, model,
                                        load_schema(config.model(model).schema_path), body)
        except IngestError as exc:  # a features-only model takes no labels
            raise RequestValidationError([{"type": "value_error", "loc": ("body",),
                                           "msg": str(exc), "input": None}]) from None
        return _ingest_result(model, report)

    batch_responses = {**INGEST_AUTH, **UNKNOWN, **STORE_DOWN, **BATCH_ERRORS,
                       **UNKNOWN_QUERY}

    @app.post("/v1/models/{model:path}/logs", response_model=IngestResult, tags=["ingest"],
              summary="Store a batch of inference logs (JSON lines, optionally gzip)",
              description="Each line is one inference, as in a JSON-lines log file: "
              "`request_id`, `timestamp`, the prediction column of the model's contract, "
              "optional probability columns, `model_version`, `latency_ms`, `error`, "
              "`error_message`, `fallback_reason`, and the features (one key each, or "
              "`features` as one object). Good rows are stored in one load; each bad one "
              "is refused with its line and field; a request id already stored is "
              "skipped, so a batch sent twice is stored once. Needs the write token or "
              "the ingest token.",
              dependencies=[Depends(require_ingest_token)],
              openapi_extra=_batch_body("log", _LOG_EXAMPLE), responses=batch_responses)
    async def post_logs(request: Request, model: ModelName) -> dict[str, Any]:
        _refuse_unknown_query(request)
        config.model(model)
        body = await batch_of(request)
        return await anyio.to_thread.run_sync(functools.partial(load_logs, model, body))

    @app.post("/v1/models/{model:path}/labels", response_model=IngestResult, tags=["ingest"],
              summary="Store a batch of ground-truth labels (JSON lines, optionally gzip)",
              description="Each line is one label, as in a JSON-lines label file: "
              "`request_id`, the contract's target column, and optionally `timestamp` "
              "(when the label became known; default: now). A label already stored is "
              "kept, not replaced. Needs the write token or the ingest token.",
              dependencies=[Depends(require_ingest_token)],
              openapi_extra=_batch_body("label", _LABEL_EXAMPLE), responses=batch_responses)
    async def post_labels(request: Request, model: ModelName) -> dict[str, Any]:
        _refuse_unknown_query(request)
        config.model(model)
        body = await batch_of(request)
        return await anyio.to_thread.run_sync(functools.partial(load_labels, model, body))

    return app
