"""Requests for a load test, made from a model's contract and its reference set.

Valid rows are whole rows of the reference set drawn at random (with replacement): the
features' joint distribution, nulls included, exactly as the model was validated on, so
the service does its usual work. Reference rows that break the contract are left out.
Without a reference set (or with ``reference=None``), each feature is drawn from its
contract alone: numbers uniform in ``[min, max]``, categories from ``allowed``, a null in
5% of a nullable column's values. ``text_length`` replaces the values of free-text
(``string``) features with random text of a length in the given bounds, to vary the
payload size.

An invalid request has one row broken in one way (``INVALID_KINDS``), in a column where
that way breaks the contract, so that the service's handling of bad input is exercised:

- ``wrong_type``: a number sent as text (``"42"``), a bool as ``"true"``, a category
  as a one-item list, a string or datetime as a number;
- ``missing``: a non-nullable feature left out of the row;
- ``null``: a non-nullable feature sent as null;
- ``out_of_range``: a number below ``min`` or above ``max``;
- ``unseen_category``: a category outside ``allowed``;
- ``non_finite``: a number no float holds: ``Infinity`` or ``-Infinity`` (as Python's
  json writes them, not standard JSON) or an integer past 1.8e308, which mqm's logger and
  ingest refuse to store;
- ``malformed``: the request body cut in half (not JSON).
"""

from __future__ import annotations

import json
import math
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from monitor.errors import MonitorError
from monitor.schema import FeatureSpec, ModelSchema, is_null, is_of_type, label_of

__all__ = [
    "INVALID_KINDS",
    "BodyShape",
    "GeneratedRequest",
    "RequestGenerator",
    "reference_rows",
    "row_violations",
]

INVALID_KINDS = ("wrong_type", "missing", "null", "out_of_range", "unseen_category",
                 "non_finite", "malformed")
BodyShape = Literal["record", "list", "object"]
_CONTRACT_NULL_SHARE = 0.05  # nulls drawn in a nullable column, without a reference
_CONTRACT_SPAN = 100.0  # a numeric range open on one side is taken this wide
_DATETIME_BASE = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class GeneratedRequest:
    """One request body: how many rows it holds, and how it was broken (``kind``
    ``"valid"``, or one of ``INVALID_KINDS`` with the ``column`` it broke)."""

    body: bytes
    rows: int
    kind: str
    column: str | None = None


def row_violations(schema: ModelSchema, row: Mapping[str, Any]) -> list[str]:
    """The contract's rules one row breaks, each naming its column (empty: valid).

    The rules of the schema check (``monitor.checks.schema_check``), for one row (an
    absent feature counts as null), and the one of mqm's log writer that a number must fit
    a float (``monitor.store.logs.make_record``).
    """
    problems = []
    for spec in schema.features:
        value: Any = row.get(spec.name)
        if is_null(value):
            if not spec.nullable:
                problems.append(f"{spec.name}: null")
            continue
        if not is_of_type(value, spec.type):
            problems.append(f"{spec.name}: not {spec.type}: {value!r}")
            continue
        if spec.type in ("int", "float") and not _fits_float(value):
            problems.append(f"{spec.name}: no float holds {value!r}")
            continue
        low, high = spec.min, spec.max
        if spec.type in ("int", "float") and (
                (low is not None and value < low) or (high is not None and value > high)):
            problems.append(f"{spec.name}: out of range: {value!r}")
        if spec.type == "category" and spec.allowed is not None and \
                label_of(value) not in {label_of(a) for a in spec.allowed}:
            problems.append(f"{spec.name}: unseen category: {value!r}")
    for name in row:
        if name not in schema.feature_names:
            problems.append(f"{name}: not in the contract")
    return problems


def reference_rows(schema: ModelSchema, frame: Any) -> tuple[list[dict[str, Any]], int]:
    """The contract's features of each reference row, as JSON values (a datetime as ISO
    text, NaN as null), and how many rows were left out for breaking the contract."""
    import pandas as pd

    names = [n for n in schema.feature_names if n in frame.columns]
    if not names:
        raise MonitorError("the reference set holds none of the contract's features")
    part = frame[names]
    for name in names:
        if pd.api.types.is_datetime64_any_dtype(part[name]):
            part = part.assign(**{name: part[name].map(
                lambda t: None if pd.isna(t) else t.isoformat())})
    records = part.astype(object).where(part.notna(), None).to_dict("records")
    # Judged on the features it holds; the others are drawn from the contract per request.
    held = schema.model_copy(update={"features": [schema.feature(n) for n in names]})
    kept = []
    for record in records:
        row = {str(k): v for k, v in record.items()}
        if not row_violations(held, row):
            kept.append(row)
    return kept, len(records) - len(kept)


class RequestGenerator:
    """Makes request bodies; ``request(rng)`` is safe to call from several threads, each
    with its own ``random.Random``."""

    def __init__(
        self,
        schema: ModelSchema,
        reference: Sequence[Mapping[str, Any]] | None = None,
        *,
        batch_size: tuple[int, int] = (1, 1),
        shape: BodyShape = "record",
        batch_key: str = "instances",
        invalid_share: float = 0.0,
        invalid_kinds: Sequence[str] | None = None,
        text_length: tuple[int, int] | None = None,
    ) -> None:
        low, high = batch_size
        if not 1 <= low <= high:
            raise MonitorError(f"batch size {low}:{high}: need 1 <= MIN <= MAX")
        if shape == "record" and high > 1:
            raise MonitorError("a batch of more than one row needs a body that holds a list "
                               "(--body list or --body object)")
        if not 0.0 <= invalid_share <= 1.0:
            raise MonitorError(f"invalid share {invalid_share}: must be between 0 and 1")
        if text_length is not None and not 0 <= text_length[0] <= text_length[1]:
            raise MonitorError(f"text length {text_length[0]}:{text_length[1]}: need "
                               "0 <= MIN <= MAX")
        if reference is not None and not reference:
            raise MonitorError("the reference set has no row that fits the contract")
        self.schema = schema
        self.reference = list(reference) if reference is not None else None
        self.batch_size = batch_size
        self.shape = shape
        self.batch_key = batch_key
        self.invalid_share = invalid_share
        self.text_length = text_length
        self._text = [s for s in schema.features if s.type == "string"]
        self._targets = self._eligible()
        if invalid_kinds is None:  # every kind that applies to this contract
            invalid_kinds = [k for k in INVALID_KINDS if k == "malformed" or self._targets[k]]
        for kind in invalid_kinds:
            if kind not in INVALID_KINDS:
                raise MonitorError(f"unknown invalid kind {kind!r}; the kinds: "
                                   f"{', '.join(INVALID_KINDS)}")
            if kind != "malformed" and not self._targets[kind]:
                raise MonitorError(f"invalid kind {kind}: {self._why_not(kind)}")
        if invalid_share > 0 and not invalid_kinds:
            raise MonitorError("an invalid share needs at least one invalid kind")
        self.invalid_kinds = tuple(invalid_kinds)

    # --- what can be broken where ---------------------------------------------------

    def _eligible(self) -> dict[str, list[FeatureSpec]]:
        features = self.schema.features
        return {
            "wrong_type": list(features),
            "missing": [s for s in features if not s.nullable],
            "null": [s for s in features if not s.nullable],
            "out_of_range": [s for s in features if s.type in ("int", "float")
                             and (s.min is not None or s.max is not None)],
            "unseen_category": [s for s in features if s.type == "category" and s.allowed],
            "non_finite": [s for s in features if s.type in ("int", "float")],
        }

    def _why_not(self, kind: str) -> str:
        model = self.schema.model
        return {
            "missing": f"every feature of {model} is nullable",
            "null": f"every feature of {model} is nullable",
            "out_of_range": f"no numeric feature of {model} has a min or max",
            "unseen_category": f"no category feature of {model} lists allowed values",
            "non_finite": f"{model} has no numeric feature",
        }.get(kind, "does not apply")

    # --- rows -------------------------------------------------------------------------

    def valid_row(self, rng: random.Random) -> dict[str, Any]:
        if self.reference is not None:
            row = dict(self.reference[rng.randrange(len(self.reference))])
            for spec in self.schema.features:
                if spec.name not in row:
                    row[spec.name] = self._contract_value(spec, rng)
        else:
            row = {spec.name: self._contract_value(spec, rng) for spec in self.schema.features}
        if self.text_length is not None:
            for spec in self._text:
                if row.get(spec.name) is not None:
                    row[spec.name] = self._text_value(rng)
        return row

    def _text_value(self, rng: random.Random) -> str:
        low, high = self.text_length or (3, 12)
        return "".join(rng.choices(string.ascii_lowercase + " ", k=rng.randint(low, high)))

    def _contract_value(self, spec: FeatureSpec, rng: random.Random) -> Any:
        if spec.nullable and rng.random() < _CONTRACT_NULL_SHARE:
            return None
        if spec.type in ("int", "float"):
            low, high = _bounds(spec)
            if spec.type == "int":
                return rng.randint(math.ceil(low), math.floor(high))
            return round(rng.uniform(low, high), 4)
        if spec.type == "bool":
            return rng.random() < 0.5
        if spec.allowed:
            return rng.choice(spec.allowed)
        if spec.type == "datetime":
            return (_DATETIME_BASE + timedelta(seconds=rng.randrange(365 * 86400))).isoformat()
        return self._text_value(rng)

    def invalid_row(self, kind: str, rng: random.Random) -> tuple[dict[str, Any], str]:
        """A valid row with one column broken in the way ``kind`` says; (row, column)."""
        row = self.valid_row(rng)
        spec = rng.choice(self._targets[kind])
        name = spec.name
        if kind == "missing":
            del row[name]
        elif kind == "null":
            row[name] = None
        elif kind == "wrong_type":
            value = row[name]
            if is_null(value):
                value = self._contract_value(spec.model_copy(update={"nullable": False}), rng)
            row[name] = _wrong_type(spec, value)
        elif kind == "out_of_range":
            row[name] = _out_of_range(spec, rng)
        elif kind == "non_finite":
            row[name] = rng.choice([math.inf, -math.inf, 10**400, -(10**400)])
        elif kind == "unseen_category":
            known = {label_of(a) for a in spec.allowed or []}
            value = f"unseen-{rng.randrange(10_000)}"
            while value in known:
                value += "x"
            row[name] = value
        return row, name

    # --- requests ---------------------------------------------------------------------

    def request(self, rng: random.Random) -> GeneratedRequest:
        rows = [self.valid_row(rng) for _ in range(rng.randint(*self.batch_size))]
        kind, column = "valid", None
        if self.invalid_share and rng.random() < self.invalid_share:
            kind = rng.choice(self.invalid_kinds)
            if kind != "malformed":
                rows[rng.randrange(len(rows))], column = self.invalid_row(kind, rng)
        body = self.encode(rows)
        if kind == "malformed":
            # A strict prefix of a JSON object or array is never JSON.
            body = body[: max(1, len(body) // 2)]
        return GeneratedRequest(body=body, rows=len(rows), kind=kind, column=column)

    def encode(self, rows: list[dict[str, Any]]) -> bytes:
        payload: Any
        if self.shape == "record":
            payload = rows[0]
        elif self.shape == "list":
            payload = rows
        else:
            payload = {self.batch_key: rows}
        return json.dumps(payload, separators=(",", ":")).encode()


def _fits_float(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _bounds(spec: FeatureSpec) -> tuple[float, float]:
    low, high = spec.min, spec.max
    if low is None and high is None:
        return 0.0, _CONTRACT_SPAN
    if low is None:
        assert high is not None
        return high - _CONTRACT_SPAN, high
    if high is None:
        return low, low + _CONTRACT_SPAN
    return low, high


def _wrong_type(spec: FeatureSpec, value: Any) -> Any:
    """A value of another type than declared, made from a valid one where it can be:
    the mistakes clients make (a number as text, a bool as text, a list for a scalar)."""
    if spec.type in ("int", "float"):
        return str(value)
    if spec.type == "bool":
        return "true" if value else "false"
    if spec.type == "category":
        return [value]
    if spec.type == "datetime":
        return 1_700_000_000
    return 12345  # string: a number


def _out_of_range(spec: FeatureSpec, rng: random.Random) -> int | float:
    low, high = _bounds(spec)
    span = max(high - low, 1.0)
    step = span * rng.uniform(0.01, 0.5) + 1.0  # at least 1 past the bound
    sides = [s for s, bound in (("low", spec.min), ("high", spec.max)) if bound is not None]
    side = rng.choice(sides)
    if side == "low":
        assert spec.min is not None
        value = spec.min - step
        return math.floor(value) if spec.type == "int" else round(value, 4)
    assert spec.max is not None
    value = spec.max + step
    return math.ceil(value) if spec.type == "int" else round(value, 4)
