"""The typed result of a load test, and how an answer is read as a default answer."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from monitor.loadtest.procstat import ProcessStats

__all__ = ["DefaultRule", "LoadTestResult", "Outcomes"]


@dataclass(frozen=True)
class DefaultRule:
    """When an answer is the service's default (fallback) answer rather than the model's.

    A status in ``statuses`` makes every row of the request a default. Otherwise, in a
    2xx answer read as JSON, the answer per row is the object itself, the items of a
    list, or the items of the list under ``answers_key``; an item is a default when its
    ``field`` equals ``value`` (compared as text; JSON's spelling for non-text: ``true``,
    ``1``, ``null``), or is truthy when ``value`` is None.
    """

    field: str | None = "served_by"
    value: str | None = "fallback"
    statuses: frozenset[int] = frozenset()
    answers_key: str | None = None

    def describe(self) -> str:
        parts = []
        if self.field:
            where = f"{self.answers_key}[]." if self.answers_key else ""
            parts.append(f"{where}{self.field}" + (f"={self.value}" if self.value is not None
                                                     else " truthy"))
        if self.statuses:
            parts.append("status " + "/".join(map(str, sorted(self.statuses))))
        return " or ".join(parts) or "none"

    def read(self, status: int, body: bytes, rows: int) -> tuple[int, int, bool]:
        """(default rows, rows answered, whether the answer could be read) of one answer."""
        if status in self.statuses:
            return rows, rows, True
        if not self.field or not 200 <= status < 300:
            return 0, rows, True
        try:
            data = json.loads(body)
        except ValueError:
            return 0, rows, False
        items = data
        if self.answers_key is not None:
            items = data.get(self.answers_key) if isinstance(data, dict) else None
        elif isinstance(data, dict):
            items = [data]
        if not isinstance(items, list) or not items or \
                not all(isinstance(i, dict) and self.field in i for i in items):
            return 0, rows, False
        hits = sum(1 for item in items if self._matches(item[self.field]))
        return hits, len(items), True

    def _matches(self, value: Any) -> bool:
        if self.value is None:
            return bool(value)
        text = value if isinstance(value, str) else json.dumps(value)
        return text == self.value


@dataclass(frozen=True)
class Outcomes:
    """How the requests of one kind (``valid`` or an invalid kind) were answered:
    ``answers`` counts each status code, and each transport failure by name
    (``timeout``, ``ConnectionResetError``, ...)."""

    kind: str
    sent: int
    answers: dict[str, int]

    def count(self, low: int, high: int) -> int:
        return sum(n for k, n in self.answers.items() if k.isdigit() and low <= int(k) < high)

    @property
    def transport_errors(self) -> int:
        return sum(n for k, n in self.answers.items() if not k.isdigit())


@dataclass(frozen=True)
class LoadTestResult:
    """What a load test measured. Rates are per second of ``elapsed_seconds`` (from the
    first request to the last answer); latencies, in milliseconds, are those of every
    answer with a status (transport failures have none); ``default_rate`` is the share of
    rows answered 2xx that were default answers (None: no rule, or no such row)."""

    url: str
    duration_seconds: float
    elapsed_seconds: float
    target_rate: float | None
    concurrency: int
    seed: int
    invalid_share: float
    requests: int
    rows: int
    rate: float
    rows_per_second: float
    latency_ms: dict[str, float | None]
    body_bytes: dict[str, int | None]
    ok: int  # 2xx
    client_errors: int  # 4xx
    server_errors: int  # 5xx
    transport_errors: int
    errors: int
    error_rate: float
    default_rule: str
    default_answers: int
    answered_rows: int
    default_rate: float | None
    unreadable_answers: int
    by_kind: tuple[Outcomes, ...]
    process: ProcessStats | None
    client_cpu_percent: float
    interrupted: bool
    notes: tuple[str, ...] = field(default=())

    def kind(self, name: str) -> Outcomes:
        for outcome in self.by_kind:
            if outcome.kind == name:
                return outcome
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["by_kind"] = {o.kind: {"sent": o.sent, "answers": o.answers} for o in self.by_kind}
        return data
