"""``mqm loadtest``'s options, each shown by what a real server on loopback received or by
what the command reports."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from monitor.cli.main import main
from monitor.loadtest.generate import row_violations
from monitor.schema import load_schema
from tests.conftest import ROOT

SCHEMA = load_schema(ROOT / "schemas" / "loan_default.yaml")


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": f"sqlite:///{tmp_path / 'mqm.db'}",
        "models": {"loan_default": {"schema": str(ROOT / "schemas" / "loan_default.yaml"),
                                    "reference": str(ROOT / "sample_data" /
                                                     "reference.parquet")}}}))

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(main, ["--config", str(config), "loadtest", "--model",
                                         "loan_default", *args], catch_exceptions=False)

    return invoke


def test_body_batch_headers_invalid_kinds_and_defaults(run, server) -> None:  # type: ignore[no-untyped-def]
    lock = threading.Lock()
    defaults = {"rows": 0}

    def answer(number: int, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        rows = body["rows"]
        if number % 3 == 0:
            with lock:
                defaults["rows"] += len(rows)
            return 203, {"answers": [{"served_by": "model"}] * len(rows)}
        return 200, {"answers": [{"served_by": "model"}] * len(rows)}

    srv = server(answer)
    result = run(srv.url, "--duration", "0.5", "--concurrency", "2", "--body", "object",
                 "--batch-key", "rows", "--batch-size", "2:3", "--answers-key", "answers",
                 "--default-status", "203", "--header", "X-Api-Key: s3cret",
                 "--invalid-share", "1", "--invalid-kinds", "null,missing", "--no-reference",
                 "--seed", "3", "--timeout", "5", "--json")
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert r["requests"] == srv.count() > 5 and r["seed"] == 3
    assert r["default_answers"] == defaults["rows"] > 0
    assert r["default_rule"] == "answers[].served_by=fallback or status 203"
    assert set(r["by_kind"]) == {"null", "missing"}  # --invalid-share 1: no valid request
    ref = pd.read_parquet(ROOT / "sample_data" / "reference.parquet")
    amounts = set(ref["loan_amount"])
    drawn = []
    for body, headers in srv.received:
        assert headers["x-api-key"] == "s3cret"
        rows = body["rows"]
        assert len(rows) in (2, 3)
        problems = [p for row in rows for p in row_violations(SCHEMA, row)]
        assert len(problems) == 1 and problems[0].endswith(": null")
        drawn += [row["loan_amount"] for row in rows if "loan_amount" in row]
    # --no-reference: values from the contract (uniform), not the reference's rows.
    assert sum(a in amounts for a in drawn if a is not None) < len(drawn) / 10


def test_default_field_truthy_or_none(run, server) -> None:  # type: ignore[no-untyped-def]
    srv = server(lambda n, body, h: (200, {"degraded": n % 2 == 0}))
    r = json.loads(run(srv.url, "--duration", "0.3", "--concurrency", "1",
                       "--default-field", "degraded", "--json").stdout)
    assert r["default_rule"] == "degraded truthy"
    assert r["default_answers"] == srv.count() // 2 and r["unreadable_answers"] == 0
    r = json.loads(run(srv.url, "--duration", "0.3", "--default-field", "", "--json").stdout)
    assert r["default_rule"] == "none" and r["default_rate"] is None


def test_reference_rows_are_sent_by_default(run, server) -> None:  # type: ignore[no-untyped-def]
    srv = server(lambda n, body, h: (200, {"served_by": "model"}))
    result = run(srv.url, "--duration", "0.3", "--body", "list", "--batch-size", "5")
    assert result.exit_code == 0, result.output
    ref = pd.read_parquet(ROOT / "sample_data" / "reference.parquet")
    amounts = set(ref["loan_amount"])
    rows = [row for body, _ in srv.received for row in body]
    assert rows and all(len(body) == 5 for body, _ in srv.received)
    assert all(row["loan_amount"] in amounts for row in rows)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--batch-size", "two"], 2, "give N or MIN:MAX"),
    (["--header", "no colon"], 2, "give 'Name: value'"),
    (["--timeout", "0"], 2, "must be above 0"),
    (["--batch-size", "1:5"], 1, "error: a batch of more than one row needs a body"),
    (["--invalid-kinds", "null,typo"], 1, "error: unknown invalid kind 'typo'"),
    (["--pid", "999999999"], 1, "error: --pid 999999999: no such process"),
    (["--duration", "7200"], 1, "error: duration 7200 s: must be above 0 and at most 3600"),
    (["--rate", "1e6"], 1, "error: rate 1e+06/s: must be above 0 and at most 10000/s"),
])
def test_bad_options_are_one_clear_line(run, args: list[str], code: int,
                                        message: str) -> None:  # type: ignore[no-untyped-def]
    result = run("http://127.0.0.1:9/predict", *args)
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output
