"""Logs and labels posted to the API: the rows of a JSON-lines file, judged by the same code
as ``mqm ingest`` and ``mqm labels``, bounded in size, and posted only with a token."""

from __future__ import annotations

import gzip
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from monitor.config import Config
from monitor.ingest import ingest_logs
from monitor.schema import load_schema
from monitor.serve.api import ENV_TOKEN, create_app
from monitor.store.db import create_engine, ensure_schema
from monitor.store.tables import ground_truth, inference_logs
from tests.conftest import good_row
from tests.test_ingest_hostile import HOSTILE_JSON

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

M = "loan_default"
WRITE = "write-token"
INGEST = "ingest-token"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def cfg(engine: sa.Engine, make_config) -> Config:  # type: ignore[no-untyped-def]
    _, config = make_config(engine.url.render_as_string(hide_password=False))
    return config


def with_serve(config: Config, **serve: Any) -> Config:
    return config.model_copy(update={"serve": config.serve.model_copy(update=serve)})


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., TestClient]]:
    """Factory: a TestClient on ``create_app``; ``write`` None means MQM_API_TOKEN unset."""
    opened: list[TestClient] = []

    def make(engine: sa.Engine, config: Config, *, write: str | None = WRITE,
             ingest: str | None = INGEST, **serve: Any) -> TestClient:
        if write is None:
            monkeypatch.delenv(ENV_TOKEN, raising=False)
        else:
            monkeypatch.setenv(ENV_TOKEN, write)
        config = with_serve(config, ingest_token=ingest, **serve)
        api = TestClient(create_app(engine, config, registry=CollectorRegistry()))
        opened.append(api)
        return api

    yield make
    for api in opened:
        api.close()


def lines(*rows: dict[str, Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def stored_logs(engine: sa.Engine) -> list[dict[str, Any]]:
    t = inference_logs
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.request_id)).mappings()
        return [{k: v for k, v in r.items() if k not in ("id", "received_at")} for r in rows]


def stored_labels(engine: sa.Engine) -> dict[str, Any]:
    t = ground_truth.c
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(t.request_id, t.label)).all())  # type: ignore[arg-type]


# --- the rows: exactly as a file ----------------------------------------------------------


def test_a_posted_batch_is_judged_and_stored_as_the_same_file_would_be(
        engine: sa.Engine, cfg: Config, client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The hostile lines of the file tests, plus bytes that are not UTF-8, posted as one
    batch: the same problems word for word, the same rows stored, as ``mqm ingest
    --on-error skip`` of a file holding those lines."""
    texts = [text for text, _ in HOSTILE_JSON]
    body = ("\n".join(texts) + "\n").encode() + (
        json.dumps(good_row(90))[:-1] + ', "loan_purpose": "').encode() + b"\xff\xfe\"}\n"
    api = client(engine, cfg)
    answer = api.post(f"/v1/models/{M}/logs", content=body, headers=bearer(INGEST))
    assert answer.status_code == 200, answer.text
    result = answer.json()

    file = tmp_path / "batch.jsonl"
    file.write_bytes(body)
    other = create_engine(f"sqlite:///{tmp_path / 'file.db'}")
    ensure_schema(other)
    report = ingest_logs(other, M, load_schema(cfg.model(M).schema_path), file,
                         on_error="skip")
    expected = [f"line {n}: {problem}" for n, (_, problem) in enumerate(HOSTILE_JSON, 1)
                if problem is not None]
    assert result["problems"][:-1] == expected
    assert result["problems"][-1].startswith(f"line {len(texts) + 1}: field 'loan_purpose': "
                                             "is not valid UTF-8 (byte 0xff")
    assert result["problems"] == report.problems
    assert (result["rows"], result["added"], result["already_stored"], result["refused"]) == (
        report.rows, report.added, 0, report.bad) == (len(texts) + 1, 2, 0, len(texts) - 1)
    assert stored_logs(engine) == stored_logs(other)
    assert [r["request_id"] for r in stored_logs(engine)] == ["r-0", "r-16"]
    other.dispose()


def test_a_batch_sent_twice_is_stored_once(engine: sa.Engine, cfg: Config,
                                           client) -> None:  # type: ignore[no-untyped-def]
    api = client(engine, cfg)
    body = lines(*(good_row(i) for i in range(5)))
    first = api.post(f"/v1/models/{M}/logs", content=body, headers=bearer(INGEST)).json()
    assert (first["added"], first["already_stored"], first["refused"]) == (5, 0, 0)
    # Sent again with two new rows (a client retrying a batch whose answer it lost).
    body += lines(good_row(5), good_row(6))
    again = api.post(f"/v1/models/{M}/logs", content=body, headers=bearer(INGEST)).json()
    assert (again["rows"], again["added"], again["already_stored"]) == (7, 2, 5)
    assert len(stored_logs(engine)) == 7


def test_gzip_batches_and_their_bounds(engine: sa.Engine, cfg: Config,
                                       client) -> None:  # type: ignore[no-untyped-def]
    api = client(engine, cfg, ingest_max_bytes=64 * 1024, ingest_max_rows=50)
    url = f"/v1/models/{M}/logs"
    gz = {**bearer(INGEST), "Content-Encoding": "gzip"}
    body = lines(*(good_row(i) for i in range(50)))
    answer = api.post(url, content=gzip.compress(body), headers=gz)
    assert answer.status_code == 200 and answer.json()["added"] == 50

    refused = {
        # 51 lines: one more than ingest_max_rows.
        "rows": (lines(*(good_row(i) for i in range(100, 151))), bearer(INGEST), 413),
        # Over 64 KiB as sent.
        "bytes": (lines(good_row(200, note="x" * 70_000)), bearer(INGEST), 413),
        # 1 MiB of zeros: a kilobyte of gzip, over 64 KiB once uncompressed.
        "gunzipped": (gzip.compress(b"0" * (1 << 20)), gz, 413),
        "not gzip": (body, gz, 400),
        "no body": (b"", bearer(INGEST), 400),
        "truncated gzip": (gzip.compress(body)[:-10], gz, 400),
        "brotli": (body, {**bearer(INGEST), "Content-Encoding": "br"}, 415),
    }
    for what, (content, headers, code) in refused.items():
        answer = api.post(url, content=content, headers=headers)
        assert answer.status_code == code, (what, answer.text)
        assert answer.json()["detail"], what
    assert "ingest_max_rows" in api.post(url, content=refused["rows"][0],
                                         headers=bearer(INGEST)).json()["detail"]
    assert len(stored_logs(engine)) == 50  # nothing of a refused batch is stored


def test_labels_join_and_unmatched_ones_are_counted(
        engine: sa.Engine, cfg: Config, client) -> None:  # type: ignore[no-untyped-def]
    api = client(engine, cfg)
    api.post(f"/v1/models/{M}/logs", content=lines(good_row(1), good_row(2)),
             headers=bearer(INGEST))
    body = lines({"request_id": "r-1", "defaulted": 1}, {"request_id": "r-2", "defaulted": 0},
                 {"request_id": "r-3", "defaulted": 1}, {"request_id": "r-4"},
                 {"request_id": "r-5", "defaulted": 0, "timestamp": "9999-12-31T23:59:59Z"})
    result = api.post(f"/v1/models/{M}/labels", content=body, headers=bearer(INGEST)).json()
    assert (result["rows"], result["added"], result["refused"], result["unmatched"]) == (
        5, 3, 2, 1)
    assert result["problems"] == [
        "line 4: field 'defaulted': is missing",
        "line 5: field 'timestamp': 9999-12-31T23:59:59+00:00 is outside the supported range "
        "1900-2199"]
    assert "1 of 3 labels match no logged request" in result["warnings"][0]
    assert stored_labels(engine) == {"r-1": 1, "r-2": 0, "r-3": 1}
    # A label already stored is kept, not replaced.
    again = api.post(f"/v1/models/{M}/labels", content=lines({"request_id": "r-1",
                                                              "defaulted": 0}),
                     headers=bearer(WRITE)).json()
    assert (again["added"], again["already_stored"]) == (0, 1)
    assert stored_labels(engine)["r-1"] == 1


def test_an_empty_batch_and_an_unknown_model(engine: sa.Engine, cfg: Config,
                                             client) -> None:  # type: ignore[no-untyped-def]
    api = client(engine, cfg)
    empty = api.post(f"/v1/models/{M}/logs", content=b"\n", headers=bearer(INGEST)).json()
    assert (empty["rows"], empty["added"]) == (0, 0) and "no log rows" in empty["warnings"][0]
    answer = api.post("/v1/models/nope/logs", content=lines(good_row(1)), headers=bearer(INGEST))
    assert answer.status_code == 404 and "nope" in answer.json()["detail"]
    answer = api.post(f"/v1/models/{M}/logs?on_error=fail", content=lines(good_row(1)),
                      headers=bearer(INGEST))
    assert answer.status_code == 422 and stored_logs(engine) == []


# --- who may post -------------------------------------------------------------------------


def test_the_ingest_token_posts_but_cannot_touch_the_flag(
        engine: sa.Engine, cfg: Config, client) -> None:  # type: ignore[no-untyped-def]
    api = client(engine, cfg)
    for i, token in enumerate((INGEST, WRITE)):
        answer = api.post(f"/v1/models/{M}/logs", content=lines(good_row(i)),
                          headers=bearer(token))
        assert answer.status_code == 200 and answer.json()["added"] == 1
    flag = f"/v1/models/{M}/fallback"
    assert api.put(flag, json={"active": True}, headers=bearer(INGEST)).status_code == 401
    assert api.delete(flag, headers=bearer(INGEST)).status_code == 401
    assert api.get(flag).json()["active"] is False
    for headers in ({}, bearer("wrong"), bearer(INGEST + "x")):
        answer = api.post(f"/v1/models/{M}/logs", content=lines(good_row(9)), headers=headers)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
    assert len(stored_logs(engine)) == 2


def test_posting_needs_a_configured_token(engine: sa.Engine, cfg: Config,
                                          client) -> None:  # type: ignore[no-untyped-def]
    api = client(engine, cfg, write=None, ingest=None)
    answer = api.post(f"/v1/models/{M}/logs", content=lines(good_row(1)), headers=bearer("x"))
    assert answer.status_code == 403 and "posting is disabled" in answer.json()["detail"]
    # The ingest token alone: it posts, and writes to the flag stay disabled.
    api = client(engine, cfg, write=None, ingest=INGEST)
    assert api.post(f"/v1/models/{M}/labels", content=lines({"request_id": "r-1",
                                                             "defaulted": 1}),
                    headers=bearer(INGEST)).status_code == 200
    assert api.put(f"/v1/models/{M}/fallback", json={"active": True},
                   headers=bearer(INGEST)).status_code == 403


def test_the_ingest_token_comes_from_the_environment(
        make_config, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    path, _ = make_config()
    from monitor.config import load_config

    monkeypatch.setenv("MQM_INGEST_TOKEN", "from-env")
    assert load_config(path).serve.ingest_token == "from-env"


def test_a_features_only_model_takes_logs_without_a_prediction_and_no_labels(
        engine: sa.Engine, client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from monitor.config import load_config
    from tests.conftest import FEATURES_MODEL, FEATURES_T0, features_only_model, features_only_rows

    config = load_config(features_only_model(
        tmp_path, engine.url.render_as_string(hide_password=False)))
    api = client(engine, config)
    rows = features_only_rows(FEATURES_T0, 3, drifted=False, seed=1)
    result = api.post(f"/v1/models/{FEATURES_MODEL}/logs", content=lines(*rows),
                      headers=bearer(INGEST)).json()
    assert (result["added"], result["refused"]) == (3, 0), result
    assert [r["prediction"] for r in stored_logs(engine)] == [None] * 3
    answer = api.post(f"/v1/models/{FEATURES_MODEL}/labels",
                      content=lines({"request_id": rows[0]["request_id"], "label": 1}),
                      headers=bearer(INGEST))
    assert answer.status_code == 422
    assert "monitored on its features alone" in answer.json()["detail"][0]["msg"]
    assert stored_labels(engine) == {}
