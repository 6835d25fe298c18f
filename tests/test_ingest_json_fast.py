"""The JSON-lines fast path (``monitor.store.json_logs``): a log batch parsed by Arrow and
checked a column at a time. For every body, ordinary or hostile, client-shaped (a
``features`` object, a ``probabilities`` object, epoch-float times) or flat (features as
top-level keys), it must give the row path's answer and store the row path's rows: the
same JSON types (an int stays an int), the same times to the microsecond, the same key
order; or leave the batch to the row path."""

from __future__ import annotations

import gzip
import json
import math
import random
from datetime import UTC, datetime
from typing import Any

import pytest

import monitor.ingest
import monitor.ingest_fast
from monitor.ingest import IngestError, ingest_log_batch, ingest_logs
from monitor.store.json_logs import _micros_of_seconds
from monitor.times import EPOCH
from tests.test_ingest_fast import row_path_calls, stored
from tests.test_ingest_hostile import HOSTILE_JSON, line

T0 = 1_790_000_000


_ABSENT = object()


def client_row(i: int, **change: Any) -> dict[str, Any]:
    """A row as the HTTP client (mqm_client ``prepare``) sends it: optional fields in its
    order, left out when absent (``_ABSENT``)."""
    row: dict[str, Any] = {
        "request_id": f"c-{i}", "timestamp": T0 + i + 0.123456789 * (i % 7),
        "features": {"age": 20 + i % 50, "annual_income": 30000.5 + i,
                     "home_ownership": ("RENT", "OWN", "MORTGAGE")[i % 3],
                     "has_cosigner": i % 2 == 0, "debt_to_income": (i % 10) / 10 + 0.05},
        "prediction": i % 2, "probabilities": {"0": 0.25, "1": 0.75},
        "latency_ms": 3.5 + i if i % 3 else _ABSENT, "error": _ABSENT,
        "error_message": _ABSENT, "model_version": "2.0" if i % 4 == 0 else _ABSENT,
        "fallback_reason": _ABSENT,
    }
    row.update(change)
    return {k: v for k, v in row.items() if v is not _ABSENT}


def flat_row(i: int, **change: Any) -> dict[str, Any]:
    """A row as ``bench/http_ingest.py`` sends it: features as top-level keys."""
    p1 = (i % 97) / 97
    row: dict[str, Any] = {
        "request_id": f"f-{i}", "timestamp": T0 + i, "age": 20 + i % 60,
        "annual_income": 30_000.0 + i, "credit_score": 500 + i % 300,
        "debt_to_income": (i % 100) / 100, "home_ownership": ("RENT", "OWN")[i % 2],
        "has_cosigner": i % 5 == 0, "prediction": int(p1 >= 0.5), "proba_0": 1 - p1,
        "proba_1": p1, "latency_ms": 3.5, "model_version": "1.4.0",
    }
    row.update(change)
    return row


def _digits(seed: int) -> str:
    """A float token with more digits than a float holds, so that parsers must round."""
    rng = random.Random(seed)
    mantissa = "".join(rng.choice("0123456789") for _ in range(rng.randint(15, 30)))
    sign, whole = rng.choice(["", "-"]), rng.randint(0, 99999)
    return f"{sign}{whole}.{mantissa}e{rng.randint(-300, 300)}"


def lines(rows: list[Any], **dumps: Any) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r, **dumps)) + "\n"
                   for r in rows).encode()


def with_features(i: int, **features: Any) -> dict[str, Any]:
    row = client_row(i)
    row["features"] = {**row["features"], **features}
    return row


def ordinary() -> dict[str, bytes]:
    """Bodies the fast path takes whole."""
    unicode_row = with_features(6, home_ownership="naïve 日本 🎉 \"q\" \\ \t")
    return {
        "client rows": lines([client_row(i) for i in range(12)]),
        "client rows, compact and non-ASCII as is": lines(
            [client_row(i) for i in range(6)] + [unicode_row], separators=(",", ":"),
            ensure_ascii=False),
        "flat rows": lines([flat_row(i) for i in range(12)]),
        "flat rows, the version before the features (as pandas writes them)": lines(
            [{"model_version": "3", **flat_row(i, model_version=None)} for i in range(6)]),
        "flat rows, blank lines and CRLF": b"\n  \n" + lines(
            [flat_row(i) for i in range(4)]).replace(b"\n", b"\r\n") + b"\n",
        "nulls and NaN in features": lines(
            [with_features(i, age=None if i % 2 else 3, annual_income=math.nan if i % 3
                           else 2.5) for i in range(6)]),
        "a NaN prediction on an error row, a float prediction": lines(
            [client_row(0, prediction=math.nan, error=True, error_message="boom")]
            + [client_row(i, prediction=0.5) for i in range(1, 4)]),
        "ints and floats as latency and time": lines(
            [client_row(0, latency_ms=2, timestamp=T0)] + [client_row(i) for i in range(1, 4)]),
        "no prediction on an error row": lines(
            [client_row(0, prediction=None, error=True)] + [client_row(i) for i in range(1, 4)]),
        "ints in probabilities": lines(
            [client_row(i, probabilities={"0": 0, "1": 1}) for i in range(4)]),
        "no probabilities in some rows": lines(
            [client_row(i, probabilities=_ABSENT if i % 2 else {"0": 0.5, "1": 0.5})
             for i in range(6)]),
        "ISO times": lines([client_row(i, timestamp=t) for i, t in enumerate(
            ["2026-10-01T00:00:00Z", "2026-10-01T00:00:00.123456+02:00",
             "2026-10-01 03:04:05.5", " 2026-10-01T00:00:00.1234567 ", "2026-10-01"])]),
        "epoch ints": lines([client_row(i, timestamp=T0 + i) for i in range(4)]),
        "text that looks like a date": lines(
            [with_features(i, home_ownership="2026-10-01") for i in range(4)]),
        "whole floats": lines([with_features(i, annual_income=float(i)) for i in range(4)]),
        "int ids": lines([client_row(i, request_id=10 ** 12 + i) for i in range(4)]),
        "unicode keys": lines([with_features(i, **{"größe": i, "名": "x"}) for i in range(4)]),
        "a prediction named by the contract": lines(
            [flat_row(i) for i in range(3)]),
        "keys with spaces and signs": lines([with_features(i, **{"a b#&~-.*(": i, "": 1})
                                             for i in range(3)]),
        "floats of many digits": lines([
            f'{{"request_id":"d-{i}","timestamp":{T0}.{i:06d}{i},"features":{{'
            + ",".join(f'"x{k}":{_digits(i * 10 + k)}' for k in range(10))
            + '},"prediction":1}' for i in range(40)]),
        "a large int that fits 64 bits": lines([with_features(i, age=2 ** 62 + i)
                                                for i in range(3)]),
        "a feature named prediction beside the contract's column": lines(
            [{**flat_row(i)} for i in range(3)]),
        "-0 and exponents": lines([
            f'{{"request_id":"e-{i}","timestamp":{T0},"features":{{"a":-0,"b":1E+2,'
            f'"c":-0.0,"d":1e-400, "e" : 1e-7}},"prediction":1}}' for i in range(3)]),
    }


def hostile() -> dict[str, bytes]:
    """Bodies with a row the row path refuses, or one Arrow would read otherwise."""
    rows = [client_row(i) for i in range(5)]
    return {
        "an int and a float in one feature": lines(
            [with_features(0, age=3)] + [with_features(i, age=3.5) for i in range(1, 4)]),
        "a float then an int": lines(
            [with_features(0, age=3.0)] + [with_features(i, age=3) for i in range(1, 4)]),
        "ints and floats in flat columns": lines([flat_row(0, credit_score=1.5)]
                                                  + [flat_row(i) for i in range(1, 4)]),
        "an int and a float prediction": lines([client_row(0, prediction=1.0), *rows[1:]]),
        "NaN prediction on an error row": lines(
            [client_row(0, prediction=math.nan, error=True, error_message="boom"), *rows[1:]]),
        "ints and floats in probabilities": lines(
            [client_row(0, probabilities={"0": 0, "1": 1}), *rows[1:]]),
        "ints and NaN": lines([with_features(0, age=math.nan), *rows[1:]]),
        "a key missing in one row": lines(
            [client_row(0, features={"age": 1})] + [client_row(i, features={"age": 1, "b": 2})
                                                     for i in range(1, 4)]),
        "a flat key missing in one row": lines(
            [{k: v for k, v in flat_row(0).items() if k != "age"}]
            + [flat_row(i) for i in range(1, 4)]),
        "keys in another order": lines(
            [client_row(0, features={"b": 2, "age": 1})]
            + [client_row(i, features={"age": 1, "b": 2}) for i in range(1, 4)]),
        "an extra key in one row": lines([with_features(0, extra=1), *rows[1:]]),
        "optional fields in other orders": lines(
            [client_row(0, error=True, latency_ms=1.5),
             {"error": True, **client_row(1, latency_ms=1.5)}, client_row(2)]),
        "an extra top-level key": lines([client_row(i, note="x") for i in range(4)]),
        "a probability class missing in one row": lines(
            [client_row(0, probabilities={"1": 0.5}), *rows[1:]]),
        "probabilities null in one row": lines([client_row(0, probabilities=None), *rows[1:]]),
        "an int beyond 64 bits": lines([with_features(i, age=2 ** 64 + i) for i in range(3)]),
        "an int beyond 64 bits among small ones": lines(
            [with_features(0, age=2 ** 64)] + [with_features(i, age=i) for i in range(1, 3)]),
        "an int beyond a float": lines([with_features(0, age=10 ** 400), *rows[1:]]),
        "an int of 5,000 digits": lines(['{"request_id":"x","timestamp":1,"features":{"a":'
                                         + "9" * 5000 + '},"prediction":1}', *rows[1:]]),
        "a time that is no time": lines([client_row(0, timestamp="yesterday"), *rows[1:]]),
        "a time out of range": lines([client_row(0, timestamp=1e20), *rows[1:]]),
        "a time before 1900": lines([client_row(0, timestamp=-3e9), *rows[1:]]),
        "a time as null": lines([client_row(0, timestamp=None), *rows[1:]]),
        "a time as NaN": lines([client_row(0, timestamp=math.nan), *rows[1:]]),
        "a time as true": lines([client_row(0, timestamp=True), *rows[1:]]),
        "ISO and epoch times": lines([client_row(0, timestamp="2026-10-01"), *rows[1:]]),
        "NaN": b'{"request_id":"x","timestamp":1,"features":{"a":NaN},"prediction":1}\n'
               + lines(rows[1:]),
        "-NaN": b'{"request_id":"x","timestamp":1,"features":{"a":-NaN},"prediction":1}\n'
                + lines(rows[1:]),
        "Infinity": lines([with_features(0, annual_income=math.inf), *rows[1:]]),
        "-Infinity": lines([with_features(0, annual_income=-math.inf), *rows[1:]]),
        "Inf": b'{"request_id":"x","timestamp":1,"features":{"a":Inf},"prediction":1}\n',
        "nan": b'{"request_id":"x","timestamp":1,"features":{"a":nan},"prediction":1}\n',
        "a repeated id": lines([*rows[:3], client_row(1)]),
        "a repeated key": b'{"request_id":"x","timestamp":1,"features":{"a":1,"a":2},'
                          b'"prediction":1}\n',
        "a nested object feature": lines([with_features(i, nested={"a": i}) for i in range(3)]),
        "a list feature": lines([with_features(i, tags=[i, 2]) for i in range(3)]),
        "features null in one row": lines([client_row(0, features=None), *rows[1:]]),
        "features as text": lines([client_row(i, features="{}") for i in range(3)]),
        "a feature named like a log field": lines([with_features(i, latency_ms=1)
                                                   for i in range(3)]),
        "not an object": lines([*rows[:2], "[1, 2]"]),
        "two objects on one line": lines(rows[:2]) + lines(rows[2:4]).replace(b"\n", b" ", 1),
        "a lone carriage return": lines(rows[:2]).replace(b"\n", b"\r", 1),
        "a byte-order mark": b"\xef\xbb\xbf" + lines(rows),
        "a byte-order mark on line 2": lines(rows[:1]) + b"\xef\xbb\xbf" + lines(rows[1:]),
        "bytes that are not UTF-8": lines(rows[:2]) + lines([client_row(9)]).replace(
            b"RENT", b"R\xffNT").replace(b"OWN", b"O\xffN"),
        "a lone surrogate": lines([with_features(0, home_ownership="\ud800"), *rows[1:]]),
        "invalid JSON": lines(rows[:2]) + b'{"request_id": "x",}\n',
        "a comma alone": lines(rows[:2]) + b",\n",
        "a raw tab in text": lines(rows[:2]) + lines([with_features(3, home_ownership="a\tb")]
                                                     ).replace(b"\\t", b"\t"),
        "a fallback reason": lines([client_row(0, fallback_reason="flag"), *rows[1:]]),
        "an overlong id": lines([client_row(0, request_id="x" * 201), *rows[1:]]),
        "an id with a space at its end": lines([client_row(0, request_id="a "), *rows[1:]]),
        "a float id": lines([client_row(i, request_id=i + 0.5) for i in range(3)]),
        "a whole float id": lines([client_row(i, request_id=float(i)) for i in range(3)]),
        "a negative latency": lines([client_row(0, latency_ms=-1), *rows[1:]]),
        "an error that is a number": lines([client_row(0, error=1), *rows[1:]]),
        "no prediction": lines([client_row(0, prediction=None), *rows[1:]]),
        "no rows": b"",
        "blank lines only": b"\n \n",
        "empty features": lines([client_row(i, features={}) for i in range(3)]),
        "an overlong version": lines([client_row(0, model_version="v" * 101), *rows[1:]]),
        "a NUL in a message": lines([client_row(0, error_message="a\x00b"), *rows[1:]]),
        **{f"hostile line {k}": (text + "\n").encode() + lines([line(90), line(91)])
           for k, (text, _) in enumerate(HOSTILE_JSON)},
        **{f"hostile line {k} after good ones": lines([line(90), line(91)]) + text.encode()
           for k, (text, _) in enumerate(HOSTILE_JSON)},
    }


def outcome(engine: Any, schema: Any, model: str, body: bytes, fast: bool,
            on_error: str) -> tuple[Any, Any]:
    try:
        report: Any = ingest_log_batch(engine, model, schema, body, source="batch",
                                       on_error=on_error, fast=fast,  # type: ignore[arg-type]
                                       default_version="1.0").as_dict()
    except IngestError as exc:
        report = str(exc)
    return report, stored(engine, model)


def test_ordinary_batches_take_the_fast_path_and_store_what_the_row_path_stores(
        engine, schema, monkeypatch) -> None:
    calls = row_path_calls(monkeypatch)
    for k, (case, body) in enumerate(ordinary().items()):
        calls[0] = 0
        fast = outcome(engine, schema, f"fast-{k}", body, True, "skip")
        assert calls[0] == 0, case  # the fast path took the whole batch
        slow = outcome(engine, schema, f"slow-{k}", body, False, "skip")
        assert calls[0] > 0, case
        assert fast == slow, case
        assert fast[0]["added"] == len(fast[1]) > 0, case
    # What the rows hold, as the row path keeps it: an int an int, a float a float.
    rows = stored(engine, "fast-0")
    first = json.loads(rows[0][3])
    assert list(first) == ["age", "annual_income", "home_ownership", "has_cosigner",
                           "debt_to_income"]
    assert type(first["age"]) is int and type(first["annual_income"]) is float
    assert json.loads(rows[0][5]) == {"0": 0.25, "1": 0.75}
    assert [r[0] for r in rows[:2]] == ["2.0", "1.0"]  # the default version fills in


@pytest.mark.parametrize("on_error", ["skip", "fail"])
def test_batches_the_fast_path_cannot_vouch_for_get_the_row_paths_answer(
        engine, schema, on_error) -> None:
    for k, (case, body) in enumerate(hostile().items()):
        fast = outcome(engine, schema, f"fast-{k}", body, True, on_error)
        slow = outcome(engine, schema, f"slow-{k}", body, False, on_error)
        assert fast == slow, case


def test_the_row_paths_reports_of_hostile_batches_name_the_problem(engine, schema) -> None:
    """A few of the hostile bodies, to show that each is a bad row the fast path handed on
    (not a body both paths happen to read alike)."""
    bodies = hostile()
    for case, problem in [
        ("an int beyond a float", "line 1: field 'age': is an integer of about 400 digits"),
        ("a time out of range", "line 1: field 'timestamp': 1e+20 is out of range"),
        ("-NaN", "line 1: invalid JSON"),
        ("Inf", "line 1: invalid JSON"),
        ("a repeated id", "line 4: field 'request_id': 'c-1' repeats line 2"),
        ("a lone surrogate", "line 1: field 'home_ownership': holds a lone surrogate"),
        ("a raw tab in text", "line 3: invalid JSON (Invalid control character"),
    ]:
        report = ingest_log_batch(engine, "m", schema, bodies[case], on_error="skip")
        assert any(p.startswith(problem) for p in report.problems), (case, report.problems)


def test_mixed_kinds_are_stored_as_sent(engine, schema) -> None:
    """The row path keeps 3 and 3.5 apart in one column; so must any batch Arrow read."""
    body = lines([with_features(0, age=3)] + [with_features(i, age=3.5) for i in range(1, 3)])
    ingest_log_batch(engine, "m", schema, body)
    ages = [json.loads(r[3])["age"] for r in stored(engine, "m")]
    assert ages == [3, 3.5, 3.5] and type(ages[0]) is int


def test_stored_ids_and_a_partial_overlap(engine, schema, monkeypatch) -> None:
    calls = row_path_calls(monkeypatch)
    body = lines([client_row(i) for i in range(10)])
    first = ingest_log_batch(engine, "m", schema, body)
    again = ingest_log_batch(engine, "m", schema, body)
    assert (first.added, again.added, again.already_stored) == (10, 0, 10)
    before = stored(engine, "m")
    overlap = lines([client_row(i, latency_ms=99.0) for i in range(5, 15)])
    report = ingest_log_batch(engine, "m", schema, overlap)
    assert (report.rows, report.added, report.already_stored) == (10, 5, 5)
    assert calls[0] == 0
    rows = stored(engine, "m")
    assert rows[:10] == before  # stored rows are not replaced
    assert [r[1] for r in rows[10:]] == [f"c-{i}" for i in range(10, 15)]


def test_epoch_seconds_become_the_microseconds_fromtimestamp_gives() -> None:
    import pyarrow as pa

    rng = random.Random(7)
    values = [T0 + rng.random() * 1e6 for _ in range(50_000)]
    values += [T0 + k / 1e6 + 5e-7 for k in range(2000)]  # near a half microsecond
    values += [-2e9 + rng.random(), 0.9999995, 1.0000005, 2.5e-6, 1.5e-6, -0.5e-6, 7e9 - 1e-7]
    got = _micros_of_seconds(pa.array(values)).cast(pa.int64()).to_pylist()
    want = [(datetime.fromtimestamp(v, tz=UTC) - EPOCH) // _US for v in values]
    assert got == want


_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - EPOCH


def test_the_http_endpoint_takes_the_fast_path(engine, monkeypatch, make_config) -> None:
    """A gzip batch posted as the client posts it is stored by the fast path."""
    import warnings

    from prometheus_client import CollectorRegistry

    from monitor.serve.api import ENV_TOKEN, create_app

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient

    calls = row_path_calls(monkeypatch)
    _, config = make_config(engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv(ENV_TOKEN, "tok")
    body = gzip.compress(lines([client_row(i) for i in range(20)], separators=(",", ":")))
    with TestClient(create_app(engine, config, registry=CollectorRegistry())) as client:
        answer = client.post("/v1/models/loan_default/logs", content=body,
                             headers={"Authorization": "Bearer tok",
                                      "Content-Encoding": "gzip"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["added"] == 20
    assert calls[0] == 0
    assert len(stored(engine, "loan_default")) == 20


def test_a_jsonl_file_takes_the_fast_path(engine, schema, tmp_path, monkeypatch) -> None:
    calls = row_path_calls(monkeypatch)
    path = tmp_path / "logs.jsonl.gz"
    path.write_bytes(gzip.compress(lines([flat_row(i) for i in range(30)])))
    fast = ingest_logs(engine, "fast", schema, path)
    assert calls[0] == 0
    slow = ingest_logs(engine, "slow", schema, path, fast=False)
    assert fast.as_dict() == slow.as_dict()
    assert stored(engine, "fast") == stored(engine, "slow")


def test_a_jsonl_file_in_chunks_is_all_or_nothing(engine, schema, tmp_path,
                                                  monkeypatch) -> None:
    """Several chunks staged apart: stopped midway, nothing is stored; an id repeated in a
    later chunk is the row path's report."""
    from monitor.store.logs import LogLoad

    monkeypatch.setattr(monitor.ingest_fast, "FAST_JSON_BYTES", 2000)  # about 6 rows a chunk
    path = tmp_path / "logs.jsonl"
    path.write_bytes(lines([flat_row(i) for i in range(40)]))
    add = LogLoad.add_arrow
    calls = [0]

    def interrupted(self: LogLoad, rows: Any, **kwargs: Any) -> int:
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return add(self, rows, **kwargs)

    monkeypatch.setattr(LogLoad, "add_arrow", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ingest_logs(engine, "m", schema, path)
    assert stored(engine, "m") == []
    staged: list[int] = []

    def counting(self: LogLoad, rows: Any, **kwargs: Any) -> int:
        staged.append(len(rows))
        return add(self, rows, **kwargs)

    monkeypatch.setattr(LogLoad, "add_arrow", counting)
    read = row_path_calls(monkeypatch)
    assert ingest_logs(engine, "m", schema, path).added == 40
    assert read[0] == 0 and len(staged) > 3 and sum(staged) == 40
    assert len(stored(engine, "m")) == 40

    repeated = tmp_path / "repeated.jsonl"
    repeated.write_bytes(lines([flat_row(i) for i in range(30)] + [flat_row(3)]))
    report = ingest_logs(engine, "r", schema, repeated, on_error="skip")
    assert report.problems == ["line 31: field 'request_id': 'f-3' repeats line 4"]
    assert report.added == 30


def test_an_unexpected_failure_of_the_fast_path_gets_the_row_paths_answer(
        engine, schema, monkeypatch) -> None:
    import pyarrow as pa

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise pa.ArrowInvalid("an input no test foresaw")

    monkeypatch.setattr(monitor.ingest_fast, "_json_logs", broken)
    body = lines([client_row(i) for i in range(5)])
    report = ingest_log_batch(engine, "m", schema, body)
    assert (report.added, report.problems) == (5, [])


def test_a_contract_naming_its_prediction_otherwise(engine, tmp_path, schema_path,
                                                    monkeypatch) -> None:
    """A line may name the prediction ``prediction`` or the contract's column; a flat
    line's target column is no feature."""
    from monitor.schema import load_schema

    text = schema_path.read_text().replace("  column: prediction", "  column: will_default")
    (tmp_path / "schema.yaml").write_text(text)
    other = load_schema(tmp_path / "schema.yaml")
    assert other.prediction is not None and other.prediction.column == "will_default"

    def renamed(i: int) -> dict[str, Any]:
        row = flat_row(i, defaulted=i % 2)
        row["will_default"] = row.pop("prediction")
        return row

    bodies = {
        "the alias": lines([flat_row(i, defaulted=1) for i in range(4)]),
        "the contract's column": lines([renamed(i) for i in range(4)]),
        "both, prediction then a feature": lines([{**renamed(i), "prediction": 7}
                                                  for i in range(4)]),
        "client rows": lines([client_row(i) for i in range(4)]),
    }
    calls = row_path_calls(monkeypatch)
    for k, (case, body) in enumerate(bodies.items()):
        calls[0] = 0
        fast = outcome(engine, other, f"fast-{k}", body, True, "skip")
        assert calls[0] == 0, case
        assert fast == outcome(engine, other, f"slow-{k}", body, False, "skip"), case
        assert fast[0]["added"] == 4, case
    features = json.loads(stored(engine, "fast-2")[0][3])
    assert features["prediction"] == 7 and "defaulted" not in features


def _random_body(rng: random.Random, n: int) -> bytes:
    """A batch of a random shape: mostly uniform columns (so that the fast path takes many),
    with now and then a mixed kind, a missing or reordered key, an odd value."""
    keys = rng.sample(["age", "income", "home", "cosigner", "score", "note", "x"],
                      rng.randint(1, 6))
    kinds = {k: rng.choice(["int", "float", "str", "bool", "whole"]) for k in keys}
    client = rng.random() < 0.5

    def value(kind: str) -> Any:
        roll = rng.random()
        if roll < 0.08:
            return None
        if roll < 0.10:
            return rng.choice([math.nan, 2 ** 63, -(2 ** 63), 2 ** 64, 1e300, 'é\\"q', [1],
                               {"a": 1}, 3, 3.5, True, ""])
        if kind == "int":
            return rng.randint(-10 ** 6, 10 ** 6)
        if kind == "float":
            return rng.uniform(-1e6, 1e6)
        if kind == "whole":
            return float(rng.randint(-100, 100))
        if kind == "bool":
            return rng.random() < 0.5
        return rng.choice(["RENT", "OWN", "naïve", "2026-10-01", "a b", "日本"])

    rows = []
    for i in range(n):
        feats = {k: value(kinds[k]) for k in keys}
        if rng.random() < 0.03 and feats:
            feats.pop(rng.choice(list(feats)))
        if rng.random() < 0.03:
            items = list(feats.items())
            rng.shuffle(items)
            feats = dict(items)
        ts: Any = T0 + rng.uniform(0, 86400)
        if rng.random() < 0.05:
            ts = rng.choice([T0 + i, "2026-10-01T00:00:00Z", None, 1e20])
        row: dict[str, Any] = {"request_id": f"z-{i}" if rng.random() > 0.02 else "z-0",
                               "timestamp": ts}
        pred: Any = i % 2 if rng.random() > 0.05 else rng.choice([None, 0.5, "yes"])
        if client:
            row.update(features=feats, prediction=pred)
            if rng.random() < 0.9:
                p = rng.random()
                row["probabilities"] = {"0": 1 - p, "1": p} if rng.random() > 0.05 else {
                    "1": 1}
        else:
            row.update(feats)
            row["prediction"] = pred
            row["proba_1"] = rng.random()
        if rng.random() < 0.5:
            row["latency_ms"] = rng.choice([rng.uniform(0, 50), rng.randint(0, 50)])
        if rng.random() < 0.05:
            row["error"] = True
        rows.append(row)
    return lines(rows, ensure_ascii=rng.random() < 0.5,
                 separators=rng.choice([(",", ":"), (", ", ": ")]))


def test_random_batches_get_the_row_paths_answer_and_rows(engine, schema, monkeypatch) -> None:
    calls = row_path_calls(monkeypatch)
    rng = random.Random(20261205)
    fast_taken = 0
    for k in range(120):
        body = _random_body(rng, rng.randint(1, 12))
        calls[0] = 0
        fast = outcome(engine, schema, f"fast-{k}", body, True, "skip")
        fast_taken += calls[0] == 0
        assert fast == outcome(engine, schema, f"slow-{k}", body, False, "skip"), body
    assert fast_taken >= 20  # the comparison covers batches the fast path took
