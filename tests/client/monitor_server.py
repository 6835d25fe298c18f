"""A real ``mqm serve`` for the client's tests: a process on a free loopback port, over a
SQLite store, that takes posted logs with an ingest token."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MODEL = "loan_default"
INGEST_TOKEN = "ingest-s3cret"
API_TOKEN = "api-s3cret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MonitorServer:
    """``mqm serve --no-scheduler`` for the sample model; ``url`` is its base URL."""

    def __init__(self, folder: Path, *, serve: dict[str, Any] | None = None,
                 model: dict[str, Any] | None = None, config: Path | None = None,
                 port: int | None = None) -> None:
        """A config for the sample model with ``serve`` and ``model`` settings, or the
        config file ``config`` (its database_url must be a SQLite file)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        if config is None:
            config = folder / "monitor.yaml"
            config.write_text(yaml.safe_dump({
                "database_url": f"sqlite:///{folder / 'mqm.db'}",
                "serve": serve or {},
                "models": {MODEL: {
                    "schema": str(ROOT / "schemas" / "loan_default.yaml"),
                    "reference": str(ROOT / "sample_data" / "reference.parquet"),
                    "window": "1h", "min_rows": 10, **(model or {})}},
            }), encoding="utf-8")
        self.config = config
        self.db_url = yaml.safe_load(config.read_text(encoding="utf-8"))["database_url"]
        self.start(port or free_port())

    def start(self, port: int) -> None:
        """Start the process on ``port`` (again, after ``stop``)."""
        folder = self.folder
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MQM_")}
        env.update(MQM_INGEST_TOKEN=INGEST_TOKEN, MQM_API_TOKEN=API_TOKEN)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "monitor", "--config", str(self.config), "serve",
                 "--no-scheduler", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
        self._wait_healthy()

    def _wait_healthy(self, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mqm serve exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mqm serve did not answer within {limit} s:\n{self.log()}")
            time.sleep(0.1)

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
