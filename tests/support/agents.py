"""Running the real coding agents (installed by scripts/ensure-agents.sh) the way a user does: `HTTPS_PROXY` with
the user's proxy token, the proxy's CA trusted, a fresh `HOME` per run, in a throwaway workspace.

Telemetry, update checks and other non-essential traffic are switched off with each agent's own settings, so a
run never waits on the internet (the stand-in answers every host the agents still call; see AGENT_QUIET_ENV).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SYSTEM_CAS = Path("/etc/ssl/certs/ca-certificates.crt")

BINARIES = {"claude": "claude", "codex": "codex", "gemini": "gemini", "copilot": "copilot", "opencode": "opencode"}

# Environment that keeps each agent off the internet apart from its model calls (documented per agent):
AGENT_QUIET_ENV = {
    # Claude Code: no telemetry, error reporting, auto-update, release notes or the title-writing side call.
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    # Gemini CLI: no usage statistics / OpenTelemetry (also off in its settings.json, written per run).
    "GEMINI_TELEMETRY_ENABLED": "false",
    # OpenCode: no self-update, no models.dev catalogue download, no npm plugin install (`--pure` too).
    "OPENCODE_DISABLE_AUTOUPDATE": "true",
    "OPENCODE_DISABLE_MODELS_FETCH": "true",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "true",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "true",
    # Node-based agents: no update-notifier checks against the npm registry.
    "NO_UPDATE_NOTIFIER": "1",
}


def agents_dir() -> Path:
    """Where scripts/ensure-agents.sh installs the agents (outside the repo)."""
    if d := os.environ.get("AIGW_TEST_AGENTS_DIR"):
        return Path(d)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "aigw-proxy" / "agents"


def agent_binary(name: str) -> Path | None:
    p = agents_dir() / "node_modules" / ".bin" / BINARIES[name]
    return p if p.exists() and os.access(p, os.X_OK) else None


def installed_versions() -> dict[str, str]:
    """The pinned versions actually installed (from the cache's lockfile)."""
    lock = agents_dir() / "package-lock.json"
    if not lock.exists():
        return {}
    pkgs = json.loads(lock.read_text())["packages"]
    return {name: pkgs.get(f"node_modules/{name}", {}).get("version", "?") for name in pkgs[""]["dependencies"]}


@dataclass
class Route:
    """How an agent reaches its upstream: through aigw-proxy, or straight to the stand-in (`direct`)."""

    proxy_url: str  # HTTPS_PROXY
    ca_file: Path  # the CA that signs what the agent sees: aigw-proxy's, or the stand-in's when direct

    def bundle(self, where: Path) -> Path:
        """System CAs plus ours, for agents whose TLS stack replaces the system store with SSL_CERT_FILE."""
        out = where / "ca-bundle-with-system.pem"
        if not out.exists():
            system = SYSTEM_CAS.read_bytes() if SYSTEM_CAS.exists() else b""
            out.write_bytes(system + b"\n" + self.ca_file.read_bytes())
        return out


@dataclass
class AgentRun:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def check(self) -> AgentRun:
        assert self.returncode == 0, (f"{self.args[0]} exited {self.returncode}\n--- stdout\n{self.stdout[-4000:]}"
                                      f"\n--- stderr\n{self.stderr[-4000:]}")
        return self

    def json_lines(self) -> list[dict]:
        out = []
        for line in self.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out


class AgentHome:
    """A fresh HOME and workspace for one agent session (resumes reuse it)."""

    def __init__(self, root: Path, route: Route) -> None:
        self.root = root
        self.home = root / "home"
        self.workspace = root / "workspace"
        self.home.mkdir(parents=True, exist_ok=True)
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.route = route

    def env(self, **extra: str) -> dict[str, str]:
        node_dir = str(Path(shutil.which("node") or "/usr/bin/node").parent)
        bundle = self.route.bundle(self.root)
        env = {
            "PATH": f"{agents_dir() / 'node_modules' / '.bin'}:{node_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "USER": "agent",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "TMPDIR": str(self.root),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_STATE_HOME": str(self.home / ".local" / "state"),
            "HTTPS_PROXY": self.route.proxy_url,
            "https_proxy": self.route.proxy_url,
            "HTTP_PROXY": self.route.proxy_url,
            "http_proxy": self.route.proxy_url,
            "NODE_EXTRA_CA_CERTS": str(self.route.ca_file),  # Node: added to its built-in roots
            "SSL_CERT_FILE": str(bundle),  # Rust/OpenSSL/Bun: replaces the system store
            **AGENT_QUIET_ENV,
            **extra,
        }
        return env

    def run(self, args: list[str], *, env: dict[str, str] | None = None, timeout: float = 180,
            stdin: str | None = None) -> AgentRun:
        started = time.monotonic()
        try:
            proc = subprocess.run(args, cwd=self.workspace, env=env or self.env(), input=stdin,
                                  capture_output=True, text=True, timeout=timeout,
                                  stdin=None if stdin is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{args[0]} did not finish in {timeout}s\n--- stdout\n{_text(exc.stdout)[-4000:]}"
                                 f"\n--- stderr\n{_text(exc.stderr)[-4000:]}") from None
        return AgentRun(args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode(errors="replace")
