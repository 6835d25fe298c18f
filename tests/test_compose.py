"""docker-compose.yml and Dockerfile, checked without a Docker engine."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# The console script sits beside the interpreter running the tests, whatever the PATH.
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
_DEFAULTED = re.compile(r"\$\{(\w+):?-([^}]*)\}")


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    if not CHECK_JSONSCHEMA.exists():
        pytest.fail(f"{CHECK_JSONSCHEMA} not found: pip install -e '.[test]'")
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form is equally valid compose
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _with_defaults(text: str) -> str:
    """Compose's ${VAR:-default} as it resolves with VAR unset."""
    return _DEFAULTED.sub(lambda m: m.group(2), text)


def test_compose_file_matches_the_compose_spec() -> None:
    result = _validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_validator_rejects_an_unknown_service_key(tmp_path: Path) -> None:
    data = _compose()
    data["services"]["monitor"]["not_a_compose_key"] = True
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = _validate(broken)
    assert result.returncode != 0
    # The key is named, so the failure is the schema's and not, say, a missing file.
    assert "not_a_compose_key" in result.stdout + result.stderr


def test_monitor_uses_the_postgres_service() -> None:
    data = _compose()
    assert "version" not in data  # obsolete in the compose spec
    services = data["services"]
    monitor, postgres = services["monitor"], services["postgres"]
    url = sa.make_url(_with_defaults(_environment(monitor)["MQM_DATABASE_URL"]))
    assert url.drivername == "postgresql+psycopg"
    assert url.host == "postgres" and (url.port or 5432) == 5432
    assert url.password == _with_defaults(_environment(postgres)["POSTGRES_PASSWORD"])
    assert monitor["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in json.dumps(postgres["healthcheck"]["test"])
    assert any(str(v).startswith("pgdata:") for v in postgres["volumes"])
    assert "pgdata" in data["volumes"]


def _copy_sources(dockerfile: str) -> list[str]:
    sources = []
    for line in dockerfile.splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        if any(w.startswith("--from") for w in words):
            continue  # copies from another build stage, not from the repo
        args = [w for w in words[1:] if not w.startswith("--")]
        sources.extend(args[:-1])  # the last one is the destination
    return sources


def test_dockerfile_copies_only_paths_that_exist() -> None:
    sources = _copy_sources(DOCKERFILE.read_text(encoding="utf-8"))
    expected = {"pyproject.toml", "monitor/", "schemas/", "sample_data/*.parquet", "monitor.yaml"}
    assert expected <= set(sources)
    for source in sources:
        assert list(ROOT.glob(source.rstrip("/"))), f"Dockerfile copies {source!r}: not found"
