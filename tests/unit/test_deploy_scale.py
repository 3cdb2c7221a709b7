"""The scale-out deploy kit, checked without Docker or a cluster: the Kubernetes manifests against the Kubernetes
JSON schemas (kubernetes-validate ships them: no network), HAProxy's config by `haproxy -c`, the replicas compose
file statically (everything it references exists and the pieces agree), and the CA hand-off both kits use runs
against the real CLI with a CA made by deploy/ca/make-ca.sh."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose-replicas.yml"
HAPROXY_CFG = DEPLOY / "haproxy" / "haproxy.cfg"
PG_DASHBOARD = DEPLOY / "grafana" / "aigw-proxy-postgres-dashboard.json"
# The oldest Kubernetes release still commonly run, and the newest the validator knows.
K8S_VERSIONS = ("1.27", kubernetes_validate.utils.latest_version())


def load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object in deploy/kubernetes/ by file name (one object per file), the Kustomization aside."""
    out = {}
    for f in sorted(K8S.glob("*.yaml")):
        doc = load(f)
        if doc["kind"] != "Kustomization":
            out[f.name] = doc
    return out


def by_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    [doc] = [d for d in manifests().values() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error} (required), $$ for a literal $."""
    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == "?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == "-" else ""

    return re.sub(r"\$\$|\$\{(\w+)(?::([-?])([^}]*))?\}", one, value)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# ------------------------------------------------------------------------------------------------ Kubernetes

def test_kubernetes_manifests_match_the_schemas() -> None:
    docs = manifests()
    assert {d["kind"] for d in docs.values()} >= {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap",
                                                  "Secret", "Namespace"}
    for name, doc in docs.items():
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)  # strict: unknown fields are errors too
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(str(p) for p in exc.absolute_path)
                pytest.fail(f"{name} (Kubernetes {version}): {path}: {exc.message}")


def test_kustomization_applies_every_manifest_but_the_example_secrets() -> None:
    kustomization = load(K8S / "kustomization.yaml")
    expected = sorted(n for n in manifests() if not n.endswith(".example.yaml"))
    assert sorted(kustomization["resources"]) == expected
    # The example Secrets carry placeholders: applying them would overwrite the real ones.
    assert all(manifests()[n]["kind"] == "Secret" for n in manifests() if n.endswith(".example.yaml"))
    assert {d["metadata"].get("namespace") for d in manifests().values() if d["kind"] != "Namespace"} == {
        by_kind("Namespace")["metadata"]["name"]
    }


def _pod() -> dict[str, Any]:
    return by_kind("Deployment")["spec"]["template"]["spec"]


def _proxy_container() -> dict[str, Any]:
    [c] = [c for c in _pod()["containers"] if c["name"] == "aigw-proxy"]
    return c


def test_deployment_probes_the_admin_health_endpoints() -> None:
    c = _proxy_container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"proxy": 8888, "admin": 8889}
    env = {e["name"]: e for e in c["env"]}
    assert env["AIGW_LISTEN"]["value"] == "0.0.0.0:8888" and env["AIGW_ADMIN_LISTEN"]["value"] == "0.0.0.0:8889"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    assert c["startupProbe"]["httpGet"]["port"] == "admin"
    # The pod gets to drain: preStop, then the proxy's own shutdown grace, within Kubernetes' grace period.
    pre_stop = float(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert _pod()["terminationGracePeriodSeconds"] > pre_stop + float(env["AIGW_SHUTDOWN_GRACE"]["value"])


def test_deployment_runs_unprivileged_on_a_read_only_root_filesystem() -> None:
    pod = _pod()
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    useradd = re.search(r"useradd .*--uid (\d+)", (DEPLOY / "Dockerfile").read_text())
    assert useradd is not None
    dockerfile_uid = useradd.group(1)
    assert pod["securityContext"]["runAsUser"] == int(dockerfile_uid)  # the image's user owns its home (/data)
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in pod["initContainers"] + pod["containers"]:
        sc = c["securityContext"]
        assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}}, c["name"]
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
        # Everything the process may write is a volume: the data dir (the CA) and /tmp.
        writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
        assert writable == {"/data", "/tmp"}, c["name"]
        assert all("emptyDir" in volumes[m["name"]] for m in c["volumeMounts"] if m["mountPath"] in writable)


def test_deployment_takes_config_database_url_and_ca_from_the_cluster() -> None:
    pod, c = _pod(), _proxy_container()
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    # The config: the ConfigMap's aigw.toml, where --config points, and a valid config (as deploy/aigw.toml).
    config_map = by_kind("ConfigMap")
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    config_path = c["args"][c["args"].index("--config") + 1]
    assert Path(config_path) == Path(mounts["config"]) / "aigw.toml"
    assert tomllib.loads(config_map["data"]["aigw.toml"]) == tomllib.loads((DEPLOY / "aigw.toml").read_text())
    # The database URL: from the Secret the example describes, never inline.
    env = {e["name"]: e for e in c["env"]}
    ref = env["AIGW_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    db_secret = by_kind("Secret", ref["name"])
    assert urlsplit(db_secret["stringData"][ref["key"]]).scheme == "postgresql"
    # The CA: a TLS Secret, mounted read-only in the init container that imports it into the shared data volume.
    [init] = pod["initContainers"]
    ca_secret = by_kind("Secret", volumes["ca"]["secret"]["secretName"])
    assert ca_secret["type"] == "kubernetes.io/tls"
    init_mounts = {m["name"]: m for m in init["volumeMounts"]}
    assert init_mounts["ca"]["readOnly"] is True and "ca" not in mounts  # the key stays out of the proxy container
    assert init_mounts["data"]["mountPath"] == mounts["data"] == env["AIGW_DATA_DIR"]["value"]
    assert init["image"] == c["image"]


def test_services_and_budget_select_the_pods() -> None:
    deployment = by_kind("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p["name"] for p in _proxy_container()["ports"]}
    services = [d for d in manifests().values() if d["kind"] == "Service"]
    exposed = {}
    for svc in services:
        assert svc["spec"]["selector"].items() <= labels.items(), svc["metadata"]["name"]
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in port_names
            exposed[p["targetPort"]] = svc["metadata"]["name"]
    assert set(exposed) == {"proxy", "admin"} and exposed["proxy"] != exposed["admin"]  # API never with the proxy
    pdb = by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# ----------------------------------------------------------------------------------------------- the CA hand-off

def _run_cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "aigw-proxy"
    return subprocess.run([sys.executable, "-m", "aigw_proxy", *argv[1:]], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def _make_ca(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (deploy/ca/make-ca.sh needs it)")
    out = tmp_path / "ca"
    proc = subprocess.run(["bash", str(DEPLOY / "ca" / "make-ca.sh"), str(out)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (out / "aigw-ca-key.pem").stat().st_mode & 0o077 == 0  # the key is private from the start
    return out


def _imported_cert(data_dir: Path) -> str:
    proc = _run_cli(["aigw-proxy", "ca", "export", "--data-dir", str(data_dir)])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_kubernetes_init_container_imports_the_ca_secret(tmp_path: Path) -> None:
    ca = _make_ca(tmp_path)
    # The TLS Secret's files, where the init container has them mounted.
    [init] = _pod()["initContainers"]
    ca_mount = Path(next(m["mountPath"] for m in init["volumeMounts"] if m["name"] == "ca"))
    data_mount = next(m["mountPath"] for m in init["volumeMounts"] if m["name"] == "data")
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    shutil.copy(ca / "aigw-ca.pem", secret_dir / "tls.crt")
    shutil.copy(ca / "aigw-ca-key.pem", secret_dir / "tls.key")
    data = tmp_path / "data"
    argv = [a.replace(str(ca_mount), str(secret_dir)).replace(data_mount, str(data)) for a in init["command"]]
    assert argv != init["command"]
    proc = _run_cli(argv)
    assert proc.returncode == 0, proc.stderr
    assert _imported_cert(data) == (ca / "aigw-ca.pem").read_text()


def test_the_compose_ca_import_gives_both_replicas_the_same_ca(tmp_path: Path) -> None:
    ca = _make_ca(tmp_path)
    compose = load(COMPOSE)
    service = compose["services"]["ca-import"]
    secrets = {name: compose["secrets"][name]["file"] for name in service["secrets"]}
    assert {Path(f).name for f in secrets.values()} == {"aigw-ca.pem", "aigw-ca-key.pem"}
    [script] = service["command"]
    script = interpolate(script, {})  # compose's $$ → $
    for name, file in secrets.items():
        script = script.replace(f"/run/secrets/{name}", str(ca / Path(file).name))
    volumes = dict(v.split(":")[::-1] for v in service["volumes"])  # mount path -> volume name
    # It fills exactly the replicas' data volumes.
    replica_data = {v.split(":")[0] for s, svc in compose["services"].items() if s.startswith("aigw-proxy-")
                    for v in svc["volumes"] if v.split(":")[1] == "/data"}
    assert set(volumes.values()) == replica_data and len(replica_data) >= 2
    for mount in volumes:
        script = script.replace(mount, str(tmp_path / mount.strip("/")))
    script = script.replace("aigw-proxy ", f"{shlex.quote(sys.executable)} -m aigw_proxy ")
    script = re.sub(r"^\s*chown .*$", "", script, flags=re.M)  # to the image's user; here we stay who we are
    assert service["entrypoint"] == ["/bin/sh", "-ec"] and service["user"] == "0:0"
    proc = subprocess.run(["/bin/sh", "-ec", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    for mount in volumes:
        assert _imported_cert(tmp_path / mount.strip("/")) == (ca / "aigw-ca.pem").read_text()


# ---------------------------------------------------------------------------------------------- compose + HAProxy

def test_compose_replicas_references_files_that_exist_and_agree() -> None:
    compose = load(COMPOSE)
    services = compose["services"]
    replicas = sorted(s for s in services if re.fullmatch(r"aigw-proxy-\d+", s))
    assert len(replicas) >= 2 and {"haproxy", "postgres", "ca-import", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        if "build" in svc:
            assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file(), name
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: named volume {source}"
            assert target.startswith("/")
    # Each replica: its own data volume (its copy of the CA), the same config, the shared database, started only
    # after the CA is imported and PostgreSQL is healthy.
    data_volumes = set()
    pg_env = services["postgres"]["environment"]
    for name in replicas:
        svc = services[name]
        data_volumes |= {v.split(":")[0] for v in svc["volumes"] if v.split(":")[1] == "/data"}
        assert svc["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                     "ca-import": {"condition": "service_completed_successfully"}}
        # The password comes from the environment (required: no default), the same variable as PostgreSQL's.
        with pytest.raises(KeyError, match="AIGW_DB_PASSWORD"):
            interpolate(svc["environment"]["AIGW_DATABASE_URL"], {})
        env = {"AIGW_DB_PASSWORD": "s3cret"}
        url = urlsplit(interpolate(svc["environment"]["AIGW_DATABASE_URL"], env))
        assert (url.scheme, url.hostname, url.port, url.path) == ("postgresql", "postgres", 5432,
                                                                  "/" + pg_env["POSTGRES_DB"])
        assert (url.username, url.password) == (pg_env["POSTGRES_USER"], "s3cret")
        assert interpolate(pg_env["POSTGRES_PASSWORD"], env) == "s3cret"
        grace = float(svc["environment"]["AIGW_SHUTDOWN_GRACE"])
        assert float(svc["stop_grace_period"].rstrip("s")) > grace
    assert len(data_volumes) == len(replicas)
    # The secrets' files are git-ignored: nobody commits the CA key.
    for secret in compose["secrets"].values():
        path = (DEPLOY / secret["file"]).resolve()
        if shutil.which("git") and (ROOT / ".git").exists():
            proc = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, timeout=30)
            assert proc.returncode == 0, f"{secret['file']} is not git-ignored"
    # Prometheus scrapes every replica's admin listener (not through HAProxy, which refuses /metrics).
    prom_mount = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    prom = load(DEPLOY / prom_mount["/etc/prometheus/prometheus.yml"])
    [job] = [j for j in prom["scrape_configs"] if j["job_name"] == "aigw-proxy"]
    assert job["static_configs"][0]["targets"] == [f"{r}:8889" for r in replicas]
    assert all(rule in prom_mount for rule in prom["rule_files"])


def _haproxy_sections() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for raw in HAPROXY_CFG.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line.startswith((" ", "\t")):
            current = line.strip()
            sections[current] = []
        else:
            assert current is not None, raw  # an indented line belongs to the section above it
            sections[current].append(line.strip())
    return sections


def test_haproxy_balances_the_replicas_in_tcp_mode_on_their_readiness() -> None:
    compose = load(COMPOSE)
    replicas = sorted(s for s in compose["services"] if re.fullmatch(r"aigw-proxy-\d+", s))
    sections = _haproxy_sections()
    assert "mode tcp" in sections["defaults"]
    backend = sections["backend aigw-proxy"]
    assert not any(line.startswith("mode ") and line != "mode tcp" for line in backend)
    assert "http-check send meth GET uri /readyz" in backend and "http-check expect status 200" in backend
    assert any(line.startswith("default-server check port 8889") for line in backend)
    assert not any("shutdown-sessions" in line for line in backend)  # draining replicas keep their streams
    servers = [line.split()[1:3] for line in backend if line.startswith("server ")]
    assert servers == [[r, f"{r}:8888"] for r in replicas]
    assert "bind :8888" in sections["frontend aigw-proxy"]
    assert "8888:8888" in compose["services"]["haproxy"]["ports"]  # published on every interface, for agents
    mounts = {v.split(":")[0]: v.split(":")[1] for v in compose["services"]["haproxy"]["volumes"]}
    assert mounts["./haproxy/haproxy.cfg"] == "/usr/local/etc/haproxy/haproxy.cfg"


def test_haproxy_accepts_the_config() -> None:
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if haproxy is None:
        why = "haproxy is not installed: `bash scripts/ensure-postgres.sh` installs Debian's (root + apt-get)"
        if in_ci():
            pytest.fail(why)
        pytest.skip(why)
    proc = subprocess.run([haproxy, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # Outside Docker the replicas' names do not resolve (init-addr none lets HAProxy start anyway): that warning
    # and nothing else.
    warnings = [line for line in out.splitlines() if "[WARNING]" in line or "[ALERT]" in line]
    assert all("could not resolve address" in w for w in warnings), warnings


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_replicas_prometheus_config(tmp_path: Path) -> None:
    config = load(DEPLOY / "prometheus" / "prometheus-replicas.yml")
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(config))
    proc = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -------------------------------------------------------------------------------------------------------- Grafana

def test_grafana_gets_the_postgres_datasource_and_dashboard() -> None:
    compose = load(COMPOSE)
    grafana, postgres = compose["services"]["grafana"], compose["services"]["postgres"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    datasource_file = next(s for s, t in mounts.items() if t.startswith("/etc/grafana/provisioning/datasources/")
                           and "postgres" in s)
    [ds] = load(DEPLOY / datasource_file)["datasources"]
    assert ds["type"] == "grafana-postgresql-datasource"
    host, port = ds["url"].split(":")
    assert host == "postgres" and int(port) == 5432 and ds["jsonData"]["database"] == postgres["environment"][
        "POSTGRES_DB"]
    # The read-only role the init script creates, with the password Grafana gets from its environment.
    reader_script = next(s for s, t in ((v.split(":")[0], v.split(":")[1]) for v in postgres["volumes"])
                         if t.startswith("/docker-entrypoint-initdb.d/"))
    assert f"${{AIGW_GRAFANA_DB_USER:-{ds['user']}}}" in (DEPLOY / reader_script).read_text()
    password_var = ds["secureJsonData"]["password"].lstrip("$").strip("{}")
    assert password_var in grafana["environment"] and password_var in postgres["environment"]
    # The dashboard is provisioned where the dashboards provider looks, and points at this datasource.
    provider = load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "aigw-proxy.yml")["providers"][0]
    assert Path(mounts["./grafana/" + PG_DASHBOARD.name]).parent == Path(provider["options"]["path"])
    dash = json.loads(PG_DASHBOARD.read_text())
    [ds_var] = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert ds_var["query"] == ds["type"] and ds_var["current"]["value"] == ds["uid"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": ds["type"], "uid": "${datasource}"}, panel["title"]
    # Failed tool invocations are highlighted: the whole row turns red on the Failed flag.
    [tools] = [p for p in dash["panels"] if p["title"] == "Tool calls"]
    [failed] = [o for o in tools["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Failed"]
    props = {p["id"]: p["value"] for p in failed["properties"]}
    assert props["custom.cellOptions"]["applyToRow"] is True
    assert props["mappings"][0]["options"]["1"]["color"] == "red"
