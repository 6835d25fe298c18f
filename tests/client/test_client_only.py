"""The client alone, as a serving image has it: a fresh virtual environment with nothing but
``clients/python`` installed logs to a real ``mqm serve`` over HTTP, and ``mqm check``
sees the rows and their labels; the serving example runs there too."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.client.monitor_server import INGEST_TOKEN, MODEL, ROOT, MonitorServer

pytestmark = pytest.mark.slow

CLIENT = ROOT / "clients" / "python"


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv (no system site-packages) with the client installed as the README says."""
    venv = tmp_path_factory.mktemp("serving-image") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(CLIENT)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return python


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[MonitorServer]:
    server = MonitorServer(tmp_path / "monitor")
    yield server
    server.stop()


def run(python: Path, code: str, *args: str, timeout: float = 120) -> str:
    done = subprocess.run([str(python), "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=python.parent)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_venv_holds_the_client_and_nothing_else(fresh_python: Path) -> None:
    listed = json.loads(run(fresh_python, """
        import sys
        before = set(sys.modules)
        import mqm_client
        # Every module the import loaded is the standard library's or the client's own.
        foreign = sorted(name for name in set(sys.modules) - before
                         if name.split(".")[0] not in sys.stdlib_module_names
                         and name.split(".")[0] != "mqm_client")
        import json
        from importlib.metadata import distributions
        print(json.dumps({"dists": sorted(d.metadata["Name"] for d in distributions()),
                          "foreign": foreign, "file": mqm_client.__file__}))
        """))
    assert "mqm-client" in listed["dists"]
    assert set(listed["dists"]) - {"mqm-client", "pip", "setuptools"} == set()
    assert listed["foreign"] == []
    assert "site-packages" in listed["file"] and str(ROOT) not in listed["file"]
    # The monitor itself is not there: no way to the database but HTTP.
    assert "No module named 'monitor'" in subprocess.run(
        [str(fresh_python), "-c", "import monitor"], capture_output=True, text=True,
        cwd=fresh_python.parent).stderr


def test_a_fresh_venv_with_only_the_client_logs_to_mqm_serve_and_mqm_check_sees_it(
        fresh_python: Path, monitor: MonitorServer) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    rows = 400
    stats = json.loads(run(fresh_python, """
        import json, sys
        from mqm_client import InferenceLogger

        url, token, start, rows = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
        logger = InferenceLogger("loan_default", url=url, token=token, model_version="1.4.0")
        for i in range(rows):
            p1 = (i % 10) / 10 + 0.05
            features = {"age": 30 + i % 40, "annual_income": 40000.0 + i, "loan_amount": 10000.0,
                        "credit_score": 700, "debt_to_income": 0.3, "employment_years": 5.0,
                        "open_accounts": 4, "home_ownership": "RENT", "loan_purpose": "car",
                        "has_cosigner": False, "application_channel": "web"}
            logger.log(features, int(p1 >= 0.5), request_id=f"req-{i}",
                       probabilities={"0": 1 - p1, "1": p1}, latency_ms=3.0,
                       timestamp=start + 1 + i * 3600 / (rows + 1))
        for i in range(0, rows, 2):
            logger.log_label(f"req-{i}", int((i % 10) / 10 + 0.05 >= 0.5))
        assert logger.flush(timeout=60), logger.stats()
        logger.close()
        print(json.dumps(logger.stats()))
        """, monitor.url, INGEST_TOKEN, str(hour.timestamp()), str(rows)))
    assert (stats["logged"], stats["written"], stats["invalid"], stats["dropped"],
            stats["write_failures"]) == (rows + rows // 2, rows + rows // 2, 0, 0, 0), stats

    done = subprocess.run(
        [sys.executable, "-m", "monitor", "--config", str(monitor.config), "check",
         "--model", MODEL, "--at", (hour + timedelta(hours=1)).isoformat(), "--json"],
        capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(monitor.folder)})
    assert done.returncode == 0, done.stderr
    checked = json.loads(done.stdout)
    assert checked["rows"] == rows
    performance = checked["checks"]["performance"]
    # The labels joined (every other request), and the probabilities made the estimate.
    assert performance["labelled_rows"] == rows // 2
    assert performance["metrics"]["accuracy"] == 1.0
    assert performance["estimated"]["estimated_accuracy"] is not None


def test_the_serving_example_runs_on_the_client_alone(fresh_python: Path,
                                                      monitor: MonitorServer) -> None:
    proc = subprocess.Popen(
        [str(fresh_python), str(ROOT / "examples" / "serving" / "app.py"), "--port", "0",
         "--monitor-url", monitor.url, "--token", INGEST_TOKEN],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=fresh_python.parent)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"serving {MODEL} on http://127.0.0.1:"), (line, proc.stderr)
        port = int(line.rsplit(":", 1)[1])
        features = {"age": 45, "annual_income": 52800.0, "loan_amount": 27300.0,
                    "credit_score": 765, "debt_to_income": 0.17, "employment_years": 7.9,
                    "open_accounts": 6, "home_ownership": "RENT",
                    "loan_purpose": "home_improvement", "has_cosigner": False,
                    "application_channel": "web"}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=json.dumps(features).encode(),
            headers={"X-Request-Id": "example-1", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read()) == {"prediction": 0, "served_by": "model",
                                                 "reason": None}
    finally:
        proc.terminate()
        try:
            _, errors = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 0, errors
    deadline = time.monotonic() + 10
    import sqlalchemy as sa

    from monitor.store.db import create_engine
    from monitor.store.tables import inference_logs

    engine = create_engine(monitor.db_url)
    try:
        t = inference_logs.c
        while True:
            with engine.connect() as conn:
                logged = conn.execute(sa.select(t.request_id, t.prediction,
                                                t.probabilities)).all()
            if logged or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        engine.dispose()
    assert [(r.request_id, r.prediction) for r in logged] == [("example-1", 0)]
    assert logged[0].probabilities == {"0": 0.955406, "1": 0.044594}
