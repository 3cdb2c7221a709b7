"""The deploy kit, checked statically (Docker cannot run here): files parse, everything they reference exists, the
pieces agree with each other, and the systemd unit is hardened and accepted by systemd itself."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load(path: Path) -> dict:
    return YAML(typ="safe").load(path.read_text())


def test_every_yaml_file_parses() -> None:
    files = sorted(DEPLOY.rglob("*.y*ml"))
    assert len(files) >= 6
    for f in files:
        assert isinstance(load(f), dict), f


def test_compose_stack_references_files_that_exist_and_agree() -> None:
    compose = load(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert {"aigw-proxy", "prometheus", "grafana", "otel-collector"} <= set(services)
    build = services["aigw-proxy"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: named volume {source}"
            assert target.startswith("/")
    # Prometheus loads the alert rules where its config says, and scrapes the proxy's admin port.
    prom = load(DEPLOY / "prometheus" / "prometheus.yml")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"] if v.startswith(".")}
    assert all(rule in mounts for rule in prom["rule_files"])
    [job] = prom["scrape_configs"]
    assert job["job_name"] == "aigw-proxy" and job["static_configs"][0]["targets"] == ["aigw-proxy:8889"]
    # The proxy exports traces to the collector's OTLP/HTTP receiver.
    otel = load(DEPLOY / "otel-collector.yaml")
    assert otel["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    env = services["aigw-proxy"]["environment"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert tomllib.loads((DEPLOY / "aigw.toml").read_text()) == {}  # the example config is valid (all comments)


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    compose = load(DEPLOY / "docker-compose.yml")
    mounts = {v.split(":")[0]: v.split(":")[1] for v in compose["services"]["grafana"]["volumes"]}
    dash_dir = load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "aigw-proxy.yml")["providers"][0]
    assert Path(mounts["./grafana/aigw-proxy-dashboard.json"]).parent == Path(dash_dir["options"]["path"])
    [ds] = load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    dash = json.loads((DEPLOY / "grafana" / "aigw-proxy-dashboard.json").read_text())
    assert dash["uid"] == "aigw-proxy"
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource", "provider", "model", "client"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_dockerfile_copies_what_exists_and_runs_the_console_script() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _dest = line.split()
        for src in sources:
            assert (ROOT / src).exists(), src
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert 'ENTRYPOINT ["aigw-proxy"]' in text and "aigw-proxy" in scripts
    assert re.search(r"^USER (?!root)", text, re.M)
    assert "8889/healthz" in text


def test_systemd_unit_is_hardened() -> None:
    unit = (DEPLOY / "aigw-proxy.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["StateDirectory"] == "aigw-proxy"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "CapabilityBoundingSet": ""}.items():
        assert settings[key] == value, key
    assert settings.get("User") not in (None, "root") or settings.get("DynamicUser") == "yes"


def test_the_image_and_the_unit_run_the_proxy_under_python_optimize() -> None:
    # Without mitmproxy's `__debug__` self-checks (README, How it works); the image also compiles the -O bytecode,
    # as it writes none at run time (PYTHONDONTWRITEBYTECODE).
    docker = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ENV PYTHONOPTIMIZE=1\b", docker, re.M)
    assert "python -O -m compileall" in docker and "PYTHONDONTWRITEBYTECODE=1" in docker
    unit = (DEPLOY / "aigw-proxy.service").read_text()
    assert "Environment=PYTHONOPTIMIZE=1" in unit.splitlines()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # Only the ExecStart binary differs from an installed system: point it at one that exists here.
    unit = (DEPLOY / "aigw-proxy.service").read_text().replace("/opt/aigw-proxy/bin/aigw-proxy", sys.executable)
    path = tmp_path / "aigw-proxy.service"
    path.write_text(unit)
    proc = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if "aigw-proxy.service" in line]
    assert problems == [], problems


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    config = load(DEPLOY / "prometheus" / "prometheus.yml")
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]  # where compose mounts it, here
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(config))
    proc = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
