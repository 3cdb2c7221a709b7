"""certs/: the trust helpers. The Debian script runs for real (update-ca-certificates) against a temporary system
root (--prefix), so the machine's own store is never touched; what it produces must then be trusted by OpenSSL
through Python's ssl: a client holding only the produced bundle verifies a TLS server whose certificate our CA
signed, and, through a running proxy, the proxy's own certificate for a provider host."""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography.x509 import Certificate

from tests.support.certs import PrivateKey, make_ca, make_server_cert, pem, server_ssl_context, write_pem
from tests.support.daemon import Daemon

CERTS = Path(__file__).resolve().parents[2] / "certs"
HOST = "api.anthropic.com"
AGENTS = ("Claude Code", "Codex", "Gemini CLI", "Copilot CLI", "OpenCode")
EXPORT = re.compile(r"^export ([A-Z_]+)='([^']*)'$")

needs_debian = pytest.mark.skipif(shutil.which("update-ca-certificates") is None,
                                  reason="Debian's update-ca-certificates is not installed")


def run(script: str, *args: str | Path, check: bool = True, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(CERTS / script), *map(str, args)], capture_output=True, text=True, timeout=60,
                          env={**{k: v for k, v in os.environ.items() if k != "AIGW_TOKEN"}, **(env or {})})
    if check:
        assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stderr}"
    return proc


def exports(stdout: str) -> dict[str, str]:
    """The `export NAME='value'` lines; every other stdout line must be a comment (stdout is eval-able)."""
    found = {}
    for line in stdout.splitlines():
        if m := EXPORT.match(line):
            found[m[1]] = m[2]
        else:
            assert line.startswith("#"), f"not an export or a comment: {line!r}"
    return found


def distro_root(prefix: Path, ca: Certificate) -> None:
    """A system root holding one 'distribution' CA, laid out as Debian's ca-certificates package does."""
    (prefix / "usr/share/ca-certificates/distro").mkdir(parents=True)
    write_pem(prefix / "usr/share/ca-certificates/distro/Distro_Root.crt", ca)
    (prefix / "etc").mkdir(parents=True)
    (prefix / "etc/ca-certificates.conf").write_text("# a distribution's list\ndistro/Distro_Root.crt\n")


def serving(server: ssl.SSLContext) -> tuple[socket.socket, threading.Thread]:
    """A TLS server on loopback for one connection, presenting the server context's certificate."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with srv:
            conn, _ = srv.accept()
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hi")
                    # Wait for the client to close first: a server closing with the client's last bytes unread
                    # sends a reset, which can reach a slow client before it has read "hi" (ECONNRESET).
                    tls.settimeout(10)
                    while tls.recv(1024):
                        pass
            except (ssl.SSLError, OSError):
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> bytes:
    """A TLS connection on loopback: the client verifies the server's certificate for HOST."""
    srv, t = serving(server)
    try:
        with socket.create_connection(srv.getsockname(), timeout=10) as raw, \
                client.wrap_socket(raw, server_hostname=HOST) as tls:
            return tls.recv(2)
    finally:
        t.join(10)


NODE_CLIENT = """
const s = require("tls").connect({host: "127.0.0.1", port: +process.argv[1], servername: process.argv[2]}, () => {
  process.stdout.write("verified"); s.end(); });
s.on("error", (e) => { process.stdout.write(e.code || String(e)); process.exit(1); });
"""


def node_handshake(server: ssl.SSLContext, env: dict[str, str]) -> str:
    """The same connection from Node (what Claude Code, Gemini CLI and Copilot CLI run on), with `env` added."""
    srv, t = serving(server)
    try:
        port = str(srv.getsockname()[1])
        proc = subprocess.run(["node", "-e", NODE_CLIENT, port, HOST], capture_output=True, text=True, timeout=30,
                              env={"PATH": os.environ["PATH"], **env})
        return proc.stdout
    finally:
        t.join(10)


def signed_server(ca: Certificate, key: PrivateKey) -> ssl.SSLContext:
    cert, cert_key = make_server_cert(ca, key, [HOST])
    return server_ssl_context(cert, cert_key)


def only(bundle: str | Path) -> ssl.SSLContext:
    """A client trusting exactly what the file holds (cafile: Python loads no default CAs besides it)."""
    return ssl.create_default_context(cafile=str(bundle))


def copies(bundle: Path, ca: Certificate) -> int:
    body = "".join(pem(ca).decode().splitlines()[1:-1])
    return "".join(bundle.read_text().split()).count(body)


@pytest.fixture
def pki(tmp_path: Path) -> dict:
    ours, ours_key = make_ca("aigw-proxy test CA")
    distro, distro_key = make_ca("Distro Root CA")
    return {"ours": ours, "ours_key": ours_key, "distro": distro, "distro_key": distro_key,
            "ca_file": write_pem(tmp_path / "aigw-ca.pem", ours)}


@needs_debian
def test_debian_script_puts_the_ca_in_the_bundle_that_openssl_and_python_trust(tmp_path: Path, pki: dict) -> None:
    root = tmp_path / "root"
    distro_root(root, pki["distro"])
    out = run("trust-debian.sh", "--ca-file", pki["ca_file"], "--prefix", root, "--proxy", "proxy.internal:8888",
              "--user", "alice", "--token", "aigw_tok123")

    bundle = root / "etc/ssl/certs/ca-certificates.crt"
    installed = root / "usr/local/share/ca-certificates/aigw-proxy.crt"
    env = exports(out.stdout)
    assert env == {"HTTPS_PROXY": "http://alice:aigw_tok123@proxy.internal:8888",
                   "NODE_EXTRA_CA_CERTS": str(installed),
                   "SSL_CERT_FILE": str(bundle), "REQUESTS_CA_BUNDLE": str(bundle)}
    for agent in AGENTS:
        assert agent in out.stdout
    assert installed.read_bytes() == pem(pki["ours"])

    # Only the produced bundle: our CA's server verifies, the distribution's CAs still do, a stranger does not.
    assert handshake(only(bundle), signed_server(pki["ours"], pki["ours_key"])) == b"hi"
    assert handshake(only(bundle), signed_server(pki["distro"], pki["distro_key"])) == b"hi"
    stranger, stranger_key = make_ca("Unrelated CA")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(only(bundle), signed_server(stranger, stranger_key))
    # The hashed directory (what OpenSSL's default CApath and SSL_CERT_DIR read) trusts it too.
    by_dir = ssl.create_default_context(capath=str(root / "etc/ssl/certs"))
    assert handshake(by_dir, signed_server(pki["ours"], pki["ours_key"])) == b"hi"
    # NODE_EXTRA_CA_CERTS's file is the CA alone; Node trusts our server with it, not without.
    assert handshake(only(env["NODE_EXTRA_CA_CERTS"]), signed_server(pki["ours"], pki["ours_key"])) == b"hi"
    if shutil.which("node"):
        ours = {"NODE_EXTRA_CA_CERTS": env["NODE_EXTRA_CA_CERTS"]}
        assert node_handshake(signed_server(pki["ours"], pki["ours_key"]), ours) == "verified"
        assert node_handshake(signed_server(pki["ours"], pki["ours_key"]), {}) != "verified"


@needs_debian
def test_debian_script_is_idempotent_and_follows_a_new_ca(tmp_path: Path, pki: dict) -> None:
    root = tmp_path / "root"
    distro_root(root, pki["distro"])
    bundle = root / "etc/ssl/certs/ca-certificates.crt"
    first = run("trust-debian.sh", "--ca-file", pki["ca_file"], "--prefix", root)
    before = bundle.read_bytes()

    again = run("trust-debian.sh", "--ca-file", pki["ca_file"], "--prefix", root)
    assert "already trusted" in again.stderr
    assert bundle.read_bytes() == before
    assert copies(bundle, pki["ours"]) == 1
    assert again.stdout == first.stdout
    assert "<token>" in exports(again.stdout)["HTTPS_PROXY"]  # no --token, no $AIGW_TOKEN: a placeholder

    rotated, rotated_key = make_ca("aigw-proxy test CA (new)")
    run("trust-debian.sh", "--ca-file", write_pem(tmp_path / "new-ca.pem", rotated), "--prefix", root)
    assert copies(bundle, rotated) == 1 and copies(bundle, pki["ours"]) == 0
    assert handshake(only(bundle), signed_server(rotated, rotated_key)) == b"hi"
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(only(bundle), signed_server(pki["ours"], pki["ours_key"]))


@needs_debian
def test_dry_run_changes_nothing_and_still_prints_the_lines(tmp_path: Path, pki: dict) -> None:
    root = tmp_path / "root"
    root.mkdir()
    out = run("trust-debian.sh", "--ca-file", pki["ca_file"], "--prefix", root, "--dry-run")
    assert list(root.iterdir()) == []
    assert "would run: update-ca-certificates" in out.stderr
    assert exports(out.stdout)["SSL_CERT_FILE"] == str(root / "etc/ssl/certs/ca-certificates.crt")


def test_clear_errors(tmp_path: Path) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    leaf, _key = make_server_cert(*make_ca("Some CA"), ["example.com"])
    out = ("--out", tmp_path / "ca.pem")
    cases: list[tuple[tuple[str | Path, ...], str]] = [
        (("--ca-file", tmp_path / "missing.pem", *out), "cannot read --ca-file"),
        (("--ca-file", not_pem, *out), "no PEM certificate"),
        (("--ca-file", write_pem(tmp_path / "leaf.pem", leaf), *out), "is not a CA"),
        (("--admin-url", "http://127.0.0.1:9", *out), "could not fetch the CA from http://127.0.0.1:9/api/v2/aibridge"),
        (("--ca-file", not_pem, "--export", *out), "at most one of"),
        (("--frobnicate", *out), "unknown option --frobnicate"),
        (("--out",), "--out needs a value"),
    ]
    for args, message in cases:
        proc = run("trust-node.sh", *args, check=False)
        assert proc.returncode == 1, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert proc.stdout == ""
    assert not (tmp_path / "ca.pem").exists()


def test_user_level_node_and_python_scripts(tmp_path: Path, pki: dict) -> None:
    base = write_pem(tmp_path / "system.pem", pki["distro"])
    py = run("trust-python.sh", "--ca-file", pki["ca_file"], "--base", base, "--out", tmp_path / "bundle.pem")
    env = exports(py.stdout)
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == str(tmp_path / "bundle.pem")
    for server in (signed_server(pki["ours"], pki["ours_key"]), signed_server(pki["distro"], pki["distro_key"])):
        assert handshake(only(env["SSL_CERT_FILE"]), server) == b"hi"
    again = run("trust-python.sh", "--ca-file", pki["ca_file"], "--base", base, "--out", tmp_path / "bundle.pem")
    assert "unchanged" in again.stderr and copies(tmp_path / "bundle.pem", pki["ours"]) == 1

    node = run("trust-node.sh", "--ca-file", pki["ca_file"], "--out", tmp_path / "node-ca.pem")
    assert exports(node.stdout)["NODE_EXTRA_CA_CERTS"] == str(tmp_path / "node-ca.pem")
    assert (tmp_path / "node-ca.pem").read_bytes() == pem(pki["ours"])


@needs_debian
def test_fetches_the_ca_from_a_running_proxy_and_then_trusts_its_certificates(daemon: Daemon,
                                                                               tmp_path: Path) -> None:
    root = tmp_path / "root"
    token = daemon.token("alice")
    out = run("trust-debian.sh", "--admin-url", f"http://127.0.0.1:{daemon.admin_port}", "--prefix", root,
              "--proxy", daemon.address, "--user", "alice", "--token", token)
    env = exports(out.stdout)
    assert env["HTTPS_PROXY"] == daemon.proxy_url("alice")
    exported = daemon.cli("ca", "export").stdout
    assert Path(env["NODE_EXTRA_CA_CERTS"]).read_text().strip() in exported

    # `--export` reads the same CA from the proxy's data dir.
    aigw = {"AIGW_PROXY": str(Path(sys.executable).parent / "aigw-proxy")}  # the one this test suite runs
    by_cli = run("trust-node.sh", "--export", "--data-dir", daemon.data_dir, "--out", tmp_path / "cli-ca.pem", env=aigw)
    assert (tmp_path / "cli-ca.pem").read_text() == Path(env["NODE_EXTRA_CA_CERTS"]).read_text()
    assert "ca export" in by_cli.stderr

    # The user's check: through the proxy, with only the produced bundle, the proxy's certificate for a provider
    # host verifies.
    auth = base64.b64encode(f"alice:{token}".encode()).decode()
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as raw:
        raw.sendall(f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
                    .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += raw.recv(4096)
        assert head.startswith(b"HTTP/1.1 200"), head
        with only(env["SSL_CERT_FILE"]).wrap_socket(raw, server_hostname=HOST) as tls:
            peer = tls.getpeercert()
            assert peer is not None and ("DNS", HOST) in peer["subjectAltName"]


def test_scripts_are_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    scripts = sorted(str(p) for p in CERTS.glob("*.sh"))
    proc = subprocess.run(["shellcheck", "-x", *scripts], capture_output=True, text=True, timeout=60, cwd=CERTS)
    assert proc.returncode == 0, proc.stdout
