"""A real `aigw-proxy run` daemon for tests: start it on free loopback ports, drive its CLI, read its records,
stop it. Providers point at a stand-in upstream through the config's `upstream` override, so nothing reaches the
internet."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.support.ports import free_port

PROVIDER_HOSTS = [
    "api.anthropic.com",
    "api.openai.com",
    "chatgpt.com",
    "api.githubcopilot.com",
    "api.individual.githubcopilot.com",
    "generativelanguage.googleapis.com",
]
AIGW = [sys.executable, "-m", "aigw_proxy"]


@dataclass
class UpstreamPKI:
    ca_file: Path
    context: ssl.SSLContext


def run_cli(data_dir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
            timeout: float = 60, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """`aigw-proxy *args` on `data_dir`'s database, or on PostgreSQL's `database_url` (AIGW_DATABASE_URL)."""
    full_env = {k: v for k, v in os.environ.items() if k != "AIGW_DATABASE_URL"}
    full_env.update({"AIGW_DATA_DIR": str(data_dir), **(env or {})})
    if database_url is not None:
        full_env["AIGW_DATABASE_URL"] = database_url
    proc = subprocess.run([*AIGW, *args], capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"aigw-proxy {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@dataclass
class Daemon:
    data_dir: Path
    port: int
    admin_port: int
    ca_bundle: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    database_url: str | None = field(default=None, repr=False)  # PostgreSQL; None: the SQLite file in data_dir

    @property
    def database(self) -> str | Path:
        """What `open_database` takes for this daemon's records."""
        return self.database_url or self.data_dir / "aigw-proxy.db"

    @property
    def backend(self) -> str:
        return "sqlite" if self.database_url is None else "postgresql"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def proxy_url(self, user: str = "alice") -> str:
        return f"http://{user}:{self.token(user)}@{self.address}"

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client's TLS context trusting the proxy's CA (what `ca export` gives developers to trust)."""
        return ssl.create_default_context(cafile=self.ca_bundle)

    def token(self, user: str) -> str:
        if user not in self.tokens:
            self.tokens[user] = self.cli("users", "add", user).stdout.strip()
        return self.tokens[user]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(self.data_dir, *args, check=check, database_url=self.database_url)

    def healthz(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/healthz", timeout=5) as r:
            return json.loads(r.read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def interceptions(self, expect: int | None = None, timeout: float = 10.0, **filters: Any) -> list[dict]:
        """Read ended interceptions straight from the database, waiting until `expect` of them exist."""
        from aigw_proxy.storage import InterceptionFilter, list_interceptions, open_database

        async def read() -> list[dict]:
            db = await open_database(self.database)
            try:
                return await list_interceptions(db, InterceptionFilter(**filters), limit=1000)
            finally:
                await db.close()

        deadline = time.monotonic() + timeout
        while True:
            rows = asyncio.run(read())
            if expect is None or len(rows) >= expect or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


    def wait_healthy(self, timeout: float = 30) -> None:
        """Wait until /healthz answers (or fail with the daemon's log), then fetch the CA bundle."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.healthz()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise AssertionError(f"daemon did not become healthy:\n{self.log()}") from None
                time.sleep(0.1)
        self.ca_bundle.write_text(self.cli("ca", "export").stdout)

    def one(self, *, prompt: str | None = None, response_id: str | None = None, timeout: float = 10.0) -> dict:
        """The single interception with this prompt or provider response id (waits for the writer)."""

        def match(r: dict) -> bool:
            if prompt is not None and prompt not in [p["prompt"] for p in r["user_prompts"]]:
                return False
            return response_id is None or response_id in [t["provider_response_id"] for t in r["token_usages"]]

        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.interceptions() if match(r)]
            if found or time.monotonic() > deadline:
                assert len(found) == 1, f"expected one interception, found {len(found)}"
                return found[0]
            time.sleep(0.05)


def start_daemon(tmp: Path, config: str, *, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 wait: bool = True, database_url: str | None = None) -> Daemon:
    """`aigw-proxy run` on free loopback ports; its records in `tmp/data` (SQLite) or, with `database_url`, in
    that PostgreSQL database (passed as AIGW_DATABASE_URL, as a deployment would: not on the command line)."""
    data_dir = tmp / "data"
    cfg = tmp / "aigw.toml"
    cfg.write_text(config)
    d = Daemon(data_dir, free_port(), free_port(), tmp / "ca-bundle.pem", tmp / "daemon.log",
               database_url=database_url)
    log = d.log_path.open("wb")
    full_env = {**os.environ, **(env or {})}
    full_env.pop("AIGW_DATABASE_URL", None)
    if database_url is not None:
        full_env["AIGW_DATABASE_URL"] = database_url
    d.proc = subprocess.Popen(
        [*AIGW, "run", "--listen", d.address, "--admin-listen", f"127.0.0.1:{d.admin_port}",
         "--data-dir", str(data_dir), "--config", str(cfg), *extra_args],
        stdout=log, stderr=subprocess.STDOUT, env=full_env,
    )
    if wait:
        d.wait_healthy()
    return d


def stop_daemon(d: Daemon, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    assert d.proc is not None
    if d.proc.poll() is None:
        d.proc.send_signal(sig)
        try:
            d.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait()
    return d.proc.returncode


class Upstream(Protocol):
    """A local stand-in for the providers' servers (HTTP StandIn or WebSocket WsStandIn)."""

    @property
    def url(self) -> str: ...


# A second OpenAI-type provider for `origin.test` (a name in the stand-in's certificate that resolves nowhere:
# until a provider claims it, a CONNECT to it cannot be tunnelled), appended to a config to see a reload route it.
# `upstream`: the stand-in's URL.
ACME_PROVIDER = """
[[providers]]
name = "acme"
type = "openai"
hosts = ["origin.test"]
upstream = "{upstream}"
"""


def provider_config(standin: Upstream, upstream_ca: Path, *, extra: str = "", ports: list[int] | None = None) -> str:
    ports = [80, 443, *(ports or [])]
    lines = [
        f'upstream_ca_file = "{upstream_ca}"',
        f"allowed_ports = {json.dumps(ports)}",
        'allowed_private_cidrs = ["127.0.0.1/32"]',
        extra,
    ]
    for name in ("anthropic", "openai", "chatgpt", "copilot", "gemini"):
        lines += ["[[providers]]", f'name = "{name}"', f'upstream = "{standin.url}"', ""]
    return "\n".join(lines)
