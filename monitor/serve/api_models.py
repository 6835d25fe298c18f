"""The HTTP API's request and response models, and the error responses its routes
declare: the OpenAPI description is built from these (``monitor.serve.api``)."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from monitor.fallback.flag import MAX_ACTOR_LENGTH
from monitor.times import utc

__all__ = [
    "AUTH",
    "BAD_BODY",
    "BATCH_ERRORS",
    "DEFAULT_ACTOR",
    "ENV_INGEST_TOKEN",
    "ENV_TOKEN",
    "INGEST_AUTH",
    "MAX_BODY",
    "MAX_ID",
    "STORE_DOWN",
    "UNKNOWN",
    "UNKNOWN_QUERY",
    "Check",
    "ClearParams",
    "ErrorBody",
    "FlagDocument",
    "FreshnessCheck",
    "Health",
    "IngestResult",
    "InvalidRequest",
    "LatestRun",
    "MetricValue",
    "ModelFreshness",
    "ModelInfo",
    "ModelLease",
    "ModelList",
    "OverrideRequest",
    "Readiness",
    "ReadyChecks",
    "RunDetail",
    "RunPage",
    "RunSummary",
    "RunWindow",
    "SchedulerCheck",
    "VersionEvidence",
    "VersionFigures",
    "VersionReport",
]

ENV_TOKEN = "MQM_API_TOKEN"
ENV_INGEST_TOKEN = "MQM_INGEST_TOKEN"  # as monitor.config's, which the config reads
DEFAULT_ACTOR = "api"  # "by" of an override set through the API without one
MAX_REASON_LENGTH = 2000
MAX_BODY = 64 * 1024  # an override is a few hundred bytes
MAX_ID = 2**63 - 1  # BIGINT on PostgreSQL, INTEGER on SQLite: larger ids overflow the driver
_NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL


class ErrorBody(BaseModel):
    detail: str = Field(description="What went wrong, naming the model or run.")


class InvalidInput(BaseModel):
    loc: list[str | int] = Field(description="Where: e.g. [\"query\", \"limt\"].")
    msg: str
    type: str


class InvalidRequest(BaseModel):
    """A 422, as FastAPI words it."""

    detail: list[InvalidInput]


class Health(BaseModel):
    status: Literal["ok"]


class Check(BaseModel):
    ok: bool
    detail: str


class SchedulerCheck(Check):
    running: bool | None = Field(description="Null when this process runs no scheduler.")
    leader: bool | None


class ModelLease(BaseModel):
    holder: str | None = Field(description="The replica holding the model's lease (host, "
                               "process id and a random part); null: released.")
    expires_at: datetime = Field(description="When the lease lapses unless renewed.")
    lapsed: bool = Field(description="No replica holds the lease now: its holder stopped "
                         "renewing it (stalled or gone); a live replica takes it over "
                         "within one renewal round.")
    here: bool = Field(description="This replica holds it.")


class ModelFreshness(Check):
    last_success_at: datetime | None = Field(
        description="When the model's last successful check run (ok, warn or critical) "
        "finished; null: never.")
    age_seconds: float | None
    max_age_seconds: float
    counted: bool = Field(
        True, description="Whether the model's freshness counts towards this replica's "
        "readiness: false while another replica holds a live lease of the model (its "
        "checks are that replica's health, not this one's).")
    lease: ModelLease | None = Field(
        None, description="The model's lease (several replicas on PostgreSQL); null where "
        "the store keeps none.")


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

    # JSON true or false only: lax parsing would take "yes", "0" or 1 for a boolean.
    active: StrictBool
    until: datetime | None = Field(
        None, description="When the override ends (ISO 8601; without a zone, UTC); null: "
        "until cleared. Must be in the future.")
    reason: str | None = Field(None, max_length=MAX_REASON_LENGTH, pattern=_NO_NUL)
    by: str | None = Field(
        None, max_length=MAX_ACTOR_LENGTH, pattern=_NO_NUL,
        description=f"Who does it, for the audit trail (default: {DEFAULT_ACTOR!r}).")

    @field_validator("until", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        # Lax parsing would read a number as Unix seconds; the API speaks ISO 8601.
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("must be an ISO 8601 time (text) or null")
        return value

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


class VersionFigures(BaseModel):
    """One model version over the stored windows (``mqm versions``)."""

    version: str
    first_seen: datetime = Field(description="Start of the first window it served in.")
    last_seen: datetime = Field(description="End of the last window it served in.")
    windows: int
    rows: int
    errors: int
    error_rate: float
    latency_p95_ms: float | None = Field(description="Row-weighted mean of the windows' p95.")
    labelled_rows: int = Field(description="Labelled rows of its mature windows.")
    correct: int
    accuracy: float | None = Field(description="Realized, over its mature windows.")
    ok_windows: int = Field(description="Windows whose run was ok.")
    ok_accuracy: float | None = Field(description="Realized, over those ok windows.")
    estimated_accuracy: float | None = Field(description="CBPE, row-weighted over windows.")
    estimated_sampling_error: float | None
    prediction_drifted_windows: int
    prediction_tested_windows: int


class VersionEvidence(BaseModel):
    """Two versions compared, on the windows both served when they did."""

    a: str
    b: str
    basis: Literal["accuracy", "estimated_accuracy", "none"] = Field(description=(
        "accuracy: two-proportion z-test on realized accuracy; estimated_accuracy: z-test "
        "on CBPE's estimates and sampling errors; none: too little data."))
    windows: int
    shared: bool = Field(description="Compared over the windows both served.")
    rows_a: int
    rows_b: int
    value_a: float | None
    value_b: float | None
    p_value: float | None
    better: str | None = Field(description="Null: no significant difference.")


class VersionReport(BaseModel):
    """Each version of a model and which recent one is best on the evidence."""

    model: str
    best: str | None = Field(description="Null: no evidence that one version is better.")
    basis: Literal["accuracy", "estimated_accuracy", "none"]
    p_value: float | None = Field(description="The largest p-value of best's comparisons.")
    confidence: float | None = Field(description="1 - p_value.")
    alpha: float
    recent: list[str] = Field(description="Versions that served in the newest windows.")
    text: str
    evidence: list[VersionEvidence]
    versions: list[VersionFigures] = Field(description="First seen first.")


class IngestResult(BaseModel):
    """What a posted batch did, as ``mqm ingest --on-error skip --json`` reports a file:
    the good rows are stored (one load, all at once), each bad row is refused with its
    line and field, and a request id already stored is skipped."""

    model: str
    rows: int = Field(description="Lines read (blank lines aside).")
    added: int = Field(description="Rows stored by this batch.")
    already_stored: int = Field(description="Rows whose request id the store already held "
                                "for the model (a batch sent again adds nothing).")
    refused: int = Field(description="Bad rows, none of them stored.")
    problems: list[str] = Field(description="One line per refused row: its line in the "
                                "batch, the field and why, as `mqm ingest` words it.")
    warnings: list[str] = Field(description="An empty batch; labels that match no logged "
                                "request.")
    unmatched: int | None = Field(None, description="Labels only: labels of the batch whose "
                                  "request id matches no stored log of the model (stored "
                                  "anyway; they join when those logs arrive).")


def _utf8(value: str | None) -> str | None:
    # A lone surrogate ("\ud800" in JSON) parses, but no database driver can encode it.
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text") from None
    return value

# --- error responses, as the routes declare them -------------------------------------


def _error(status: int, description: str, **extra: Any) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": description, **extra}}


UNKNOWN = _error(404, "The config declares no such model.")
# Routes with parameters have FastAPI's own 422; this is for those without.
UNKNOWN_QUERY: dict[int | str, dict[str, Any]] = {422: {
    "model": InvalidRequest, "description": "An unknown query parameter."}}
STORE_DOWN = _error(503, "The store cannot be reached.")
BAD_BODY = {
    **_error(400, "The body is not JSON (or not UTF-8)."),
    **_error(413, "The body is larger than 64 KiB."),
}
AUTH = {
    **_error(401, "Missing or wrong bearer token.",
             headers={"WWW-Authenticate": {"schema": {"type": "string"},
                                           "description": "Bearer"}}),
    **_error(403, f"Writes are disabled: {ENV_TOKEN} is not set."),
}
BATCH_ERRORS = {
    **_error(400, "No body, or one that is not valid gzip."),
    **_error(413, "The batch is larger than serve.ingest_max_bytes (as sent or uncompressed) "
             "or has more lines than serve.ingest_max_rows; nothing of it was stored."),
    **_error(415, "A Content-Encoding other than gzip."),
}
INGEST_AUTH = {
    **_error(401, "Missing or wrong bearer token.",
             headers={"WWW-Authenticate": {"schema": {"type": "string"},
                                           "description": "Bearer"}}),
    **_error(403, f"Posting is disabled: neither {ENV_TOKEN} nor serve.ingest_token "
             f"({ENV_INGEST_TOKEN}) is set."),
}
