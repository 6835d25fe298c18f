"""The compose stack's alerting half, checked without a Docker engine: what it mounts
exists, Prometheus scrapes the serve service and sends to the alertmanager service, ports
are on loopback, and the documented override names real services."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.alerts.stack import ALERTS, PROMETHEUS_YML
from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def _services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]


def _binds(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> repo path of the service's bind mounts (short syntax)."""
    out = {}
    for volume in service.get("volumes", ()):
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            out[target] = source
    return out


def _flag(args: list[str], name: str) -> str:
    [value] = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return value


def _container_port(service: dict[str, Any], flag: str = "web.listen-address") -> int:
    return int(_flag(service["command"], flag).rsplit(":", 1)[1])


def test_every_mounted_file_exists() -> None:
    mounted = 0
    for name, service in _services().items():
        for target, source in _binds(service).items():
            assert (ROOT / source).exists(), f"{name} mounts {source} at {target}: not found"
            mounted += 1
    assert mounted >= 4  # prometheus.yml, rules/, alertmanager.yml, its renderer


def test_every_published_port_is_on_loopback() -> None:
    for name, service in _services().items():
        for port in service.get("ports", ()):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_prometheus_scrapes_the_serve_service_on_its_port() -> None:
    services = _services()
    serve_args = services["serve"]["command"]
    serve_port = int(serve_args[serve_args.index("--port") + 1])
    config = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "mqm"]
    assert job["static_configs"] == [{"targets": [f"serve:{serve_port}"]}]
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_prometheus_sends_to_the_alertmanager_service() -> None:
    services = _services()
    am_port = _container_port(services["alertmanager"])
    config = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    [am] = config["alerting"]["alertmanagers"]
    assert am["static_configs"] == [{"targets": [f"alertmanager:{am_port}"]}]


def test_prometheus_loads_the_mounted_config_and_rules() -> None:
    prometheus = _services()["prometheus"]
    binds = _binds(prometheus)
    config_path = _flag(prometheus["command"], "config.file")
    assert binds[config_path] == "./alerts/prometheus.yml"
    # rule_files are relative to the config file, in the container as in the repo.
    config = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    for pattern in config["rule_files"]:
        assert not pattern.startswith("/")
        in_repo = PROMETHEUS_YML.parent / pattern
        assert in_repo.exists()
        in_container = Path(config_path).parent / pattern
        mounted = [t for t, s in binds.items()
                   if in_container.is_relative_to(t) and t != config_path]
        assert mounted, f"{in_container} is not mounted"
        [target] = mounted
        from_mount = ROOT / binds[target] / in_container.relative_to(target)
        assert from_mount.resolve() == in_repo.resolve()
    assert prometheus["ports"] == [f"127.0.0.1:{_container_port(prometheus)}:9090"]


def test_alertmanager_renders_the_mounted_config_and_runs_on_the_copy() -> None:
    am = _services()["alertmanager"]
    binds = _binds(am)
    env = am["environment"]
    assert binds[env["MQM_AM_TEMPLATE"]] == "./alerts/alertmanager.yml"
    assert am["entrypoint"][-1] in binds and binds[am["entrypoint"][-1]] == \
        "./alerts/render-alertmanager.sh"
    assert _flag(am["command"], "config.file") == env["MQM_AM_CONFIG"]
    # The rendered copy lives in the writable data volume, not in a read-only mount.
    storage = _flag(am["command"], "storage.path")
    assert env["MQM_AM_CONFIG"].startswith(storage + "/")
    assert any(str(v).startswith("amdata:" + storage) for v in am["volumes"])
    assert env["MQM_ALERT_WEBHOOK_URL"] == "${MQM_ALERT_WEBHOOK_URL:-}"
    assert "--cluster.listen-address=" in am["command"]  # one instance, no gossip


def test_mqm_services_share_the_store_and_the_dashboard_listens_on_8501() -> None:
    services = _services()
    urls = {services[name]["environment"]["MQM_DATABASE_URL"]
            for name in ("monitor", "serve", "dashboard")}
    assert len(urls) == 1
    dashboard = services["dashboard"]
    assert dashboard["command"] == ["dashboard", "--host", "0.0.0.0", "--port", "8501"]
    assert dashboard["ports"] == ["127.0.0.1:8501:8501"]
    assert dashboard["depends_on"]["monitor"]["condition"] == "service_completed_successfully"
    # The alerts' dashboard links point at the published port.
    assert "http://localhost:8501/?model=" in (ALERTS / "rules" / "mqm.rules.yml").read_text()
    postgres_ports = services["postgres"]["ports"]
    assert postgres_ports == ["127.0.0.1:${POSTGRES_HOST_PORT:-5433}:5432"]


def test_the_documented_override_mounts_a_config_for_every_mqm_service() -> None:
    readme = (ALERTS / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```yaml\n# docker-compose.override.yml\n(.*?)```", readme, re.S)
    assert match, "alerts/README.md lost its docker-compose.override.yml example"
    override = yaml.safe_load(match.group(1))["services"]
    services = _services()
    assert set(override) == {"monitor", "serve", "dashboard"}
    for name, service in override.items():
        assert services[name]["image"] == "mqm:latest"
        [volume] = service["volumes"]
        target = volume.split(":")[1]
        assert service["environment"]["MQM_CONFIG"].startswith(target + "/")
