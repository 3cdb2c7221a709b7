"""Daemon settings: command-line/environment values plus the TOML config file, validated up front.

Every problem is a ConfigError whose message names the file and the field, so `aigw-proxy run` can fail fast.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigw_proxy.capture.raw import DEFAULT_CAPTURE_MAX_BYTES, MIN_CAPTURE_MAX_BYTES
from aigw_proxy.policy.circuit import BreakerConfig
from aigw_proxy.policy.providers import Provider, ProviderTable, builtin_providers
from aigw_proxy.policy.shadow_ai import parse_host_patterns
from aigw_proxy.redaction.records import DEFAULT_MAX_FIELD_BYTES, MIN_MAX_FIELD_BYTES, RedactionConfig
from aigw_proxy.spend.budgets import Budget, BudgetError, parse_budgets
from aigw_proxy.spend.limits import LimitsError, UserLimits, parse_limits
from aigw_proxy.spend.overrides import PriceConfigError, PriceOverride, parse_price_overrides
from aigw_proxy.spend.policy import PolicyError, PolicyRule, parse_model_policy

if TYPE_CHECKING:
    from aigw_proxy.storage.database import DatabaseConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    pass


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "aigw-proxy"


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT` or `:PORT` (all interfaces)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ConfigError(f"{what} {value!r} must be HOST:PORT")
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"{what} {value!r}: port {port!r} is not a number") from None
    if not 0 <= p <= 65535:
        raise ConfigError(f"{what} {value!r}: port must be 0..65535")
    return host or "0.0.0.0", p


def parse_workers(value: str | int, what: str = "--workers") -> int:
    """A worker count: a number >= 1, or `auto` for the CPUs this process may run on."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        return max(1, len(cpus))
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{what} must be a number >= 1 or auto, not {value!r}") from None
    if n < 1:
        raise ConfigError(f"{what} must be a number >= 1 or auto, not {value!r}")
    return n


@dataclass(slots=True)
class FileConfig:
    """What the TOML file may set."""

    providers: list[Provider] = field(default_factory=builtin_providers)
    upstream_ca_file: Path | None = None
    allowed_private_cidrs: list[IPNetwork] = field(default_factory=list)
    allowed_ports: tuple[int, ...] = (80, 443)
    shadow_ai_hosts: tuple[str, ...] = ()  # extra host patterns counted as shadow AI when tunnelled (shadow_ai.py)
    redaction: RedactionConfig = field(default_factory=RedactionConfig)  # [redaction]: secrets and field caps
    prices: tuple[PriceOverride, ...] = ()  # `[[prices]]`: operator price overrides, first match wins (spend/)
    budgets: tuple[Budget, ...] = ()  # `[[budgets]]` (spend/budgets.py); the database's replace them per scope
    limits: tuple[UserLimits, ...] = ()  # `[[limits]]`: per-user rate limits and concurrency caps (spend/limits.py)
    model_policy: tuple[PolicyRule, ...] = ()  # `[[model_policy]]` (spend/policy.py)
    workers: int | None = None  # `workers`: proxy processes (proxy/workers.py); --workers / AIGW_WORKERS win
    supervisor: bool = False  # `supervisor`: a supervisor process serves the admin listener even for one worker
    capture_bodies: bool = False  # raw capture of each model call's bodies (capture/), off by default
    capture_max_bytes: int | None = None  # bytes kept of each captured body; None: DEFAULT_CAPTURE_MAX_BYTES

    def provider_table(self) -> ProviderTable:
        return ProviderTable(self.providers)


_TOP_KEYS = {"upstream_ca_file", "allowed_private_cidrs", "allowed_ports", "providers", "shadow_ai_hosts", "redaction",
             "prices", "budgets", "limits", "model_policy", "workers", "supervisor", "capture_bodies",
             "capture_max_bytes"}
_PROVIDER_KEYS = {"name", "type", "hosts", "upstream", "enabled", "base_path"}
_REDACTION_KEYS = {"mode", "max_field_bytes", "allow", "patterns"}
_PATTERN_KEYS = {"name", "regex", "keywords"}
REDACTION_MODES = ("off", "redact", "block")


def load_file_config(path: Path | None) -> FileConfig:
    """Read and validate the TOML config file; None means built-in defaults only."""
    if path is None:
        return FileConfig()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return parse_file_config(raw, base_dir=path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_file_config(raw: dict[str, Any], *, base_dir: Path) -> FileConfig:
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(sorted(unknown))}")
    cfg = FileConfig()
    if (ca := raw.get("upstream_ca_file")) is not None:
        if not isinstance(ca, str):
            raise ConfigError("upstream_ca_file must be a path string")
        p = Path(ca) if Path(ca).is_absolute() else base_dir / ca
        if not p.is_file():
            raise ConfigError(f"upstream_ca_file {p} does not exist")
        cfg.upstream_ca_file = p
    cidrs = raw.get("allowed_private_cidrs", [])
    if not isinstance(cidrs, list):
        raise ConfigError("allowed_private_cidrs must be a list of CIDR strings")
    for c in cidrs:
        try:
            cfg.allowed_private_cidrs.append(ipaddress.ip_network(str(c), strict=False))
        except ValueError:
            raise ConfigError(f"allowed_private_cidrs: {c!r} is not a valid CIDR") from None
    if "allowed_ports" in raw:
        ports = raw["allowed_ports"]
        if not isinstance(ports, list) or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
            raise ConfigError("allowed_ports must be a list of port numbers (1..65535)")
        cfg.allowed_ports = tuple(ports)
    if "shadow_ai_hosts" in raw:
        try:
            cfg.shadow_ai_hosts = parse_host_patterns(raw["shadow_ai_hosts"])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if "redaction" in raw:
        cfg.redaction = parse_redaction(raw["redaction"])
    if "capture_bodies" in raw:
        if not isinstance(raw["capture_bodies"], bool):
            raise ConfigError("capture_bodies must be true or false")
        cfg.capture_bodies = raw["capture_bodies"]
    if "capture_max_bytes" in raw:
        cfg.capture_max_bytes = check_capture_max_bytes(raw["capture_max_bytes"], "capture_max_bytes")
    if "prices" in raw:
        try:
            cfg.prices = parse_price_overrides(raw["prices"])
        except PriceConfigError as exc:
            raise ConfigError(str(exc)) from None
    try:
        if "budgets" in raw:
            cfg.budgets = parse_budgets(raw["budgets"])
        if "limits" in raw:
            cfg.limits = parse_limits(raw["limits"])
        if "model_policy" in raw:
            cfg.model_policy = parse_model_policy(raw["model_policy"])
    except (BudgetError, LimitsError, PolicyError) as exc:
        raise ConfigError(str(exc)) from None
    if "workers" in raw:
        if isinstance(raw["workers"], bool) or not isinstance(raw["workers"], int | str):
            raise ConfigError("workers must be a number >= 1 or \"auto\"")
        cfg.workers = parse_workers(raw["workers"], "workers")
    if "supervisor" in raw:
        if not isinstance(raw["supervisor"], bool):
            raise ConfigError("supervisor must be true or false")
        cfg.supervisor = raw["supervisor"]
    cfg.providers = merge_providers(raw.get("providers", []))
    try:
        cfg.provider_table()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return cfg


def parse_redaction(raw: Any) -> RedactionConfig:
    """The `[redaction]` table: `mode`, `max_field_bytes`, `allow` (regexes of secrets to keep) and
    `[[redaction.patterns]]` (`name`, `regex`, optional `keywords`) added to the built-in rules."""
    from aigw_proxy.redaction.engine import compile_allow, compile_extra_rule

    if not isinstance(raw, dict):
        raise ConfigError("redaction must be a table ([redaction])")
    unknown = set(raw) - _REDACTION_KEYS
    if unknown:
        raise ConfigError(f"redaction: unknown key(s) {', '.join(sorted(unknown))}")
    out = RedactionConfig()
    if "mode" in raw:
        if raw["mode"] not in REDACTION_MODES:
            raise ConfigError(f"redaction.mode must be one of {', '.join(REDACTION_MODES)}")
        out.mode = raw["mode"]
    if "max_field_bytes" in raw:
        out.max_field_bytes = check_max_field_bytes(raw["max_field_bytes"], "redaction.max_field_bytes")
    allow = raw.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise ConfigError("redaction.allow must be a list of regex strings")
    patterns = raw.get("patterns", [])
    if not isinstance(patterns, list):
        raise ConfigError("redaction.patterns must be an array of tables ([[redaction.patterns]])")
    try:
        out.allow = tuple(compile_allow(a) for a in allow)
        for i, entry in enumerate(patterns):
            where = f"redaction.patterns[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where} must be a table")
            if set(entry) - _PATTERN_KEYS:
                raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(set(entry) - _PATTERN_KEYS))}")
            name, regex, keywords = entry.get("name"), entry.get("regex"), entry.get("keywords", [])
            if not isinstance(name, str) or not isinstance(regex, str):
                raise ConfigError(f"{where}: name and regex are required strings")
            if not isinstance(keywords, list) or not all(isinstance(k, str) and k for k in keywords):
                raise ConfigError(f"{where}: keywords must be a list of non-empty strings")
            out.patterns = (*out.patterns, compile_extra_rule(name, regex, keywords))
    except ValueError as exc:
        raise ConfigError(f"redaction: {exc}") from None
    return out


def check_max_field_bytes(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_MAX_FIELD_BYTES:
        raise ConfigError(f"{what} must be a whole number of bytes, at least {MIN_MAX_FIELD_BYTES}")
    return value


def check_capture_max_bytes(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_CAPTURE_MAX_BYTES:
        raise ConfigError(f"{what} must be a whole number of bytes, at least {MIN_CAPTURE_MAX_BYTES}")
    return value


def merge_providers(entries: Any) -> list[Provider]:
    """Built-ins, with config entries overriding a built-in of the same name field by field, or adding one."""
    if not isinstance(entries, list):
        raise ConfigError("providers must be an array of tables ([[providers]])")
    merged = {p.name: p for p in builtin_providers()}
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"providers[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table")
        unknown = set(entry) - _PROVIDER_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name = entry.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"{where}: name is required")
        if name in seen:
            raise ConfigError(f"{where}: provider name {name!r} is used twice")
        seen.add(name)
        base = merged.get(name)
        hosts = entry.get("hosts", list(base.hosts) if base else None)
        ptype = entry.get("type", base.type if base else None)
        if hosts is None or ptype is None:
            raise ConfigError(f"{where} ({name}): a new provider needs type and hosts")
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise ConfigError(f"{where} ({name}): hosts must be a list of hostnames")
        enabled = entry.get("enabled", base.enabled if base else True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{where} ({name}): enabled must be true or false")
        upstream = entry.get("upstream", str(base.upstream) if base and base.upstream else None)
        base_path = entry.get("base_path", base.base_path if base and base.type == ptype else None)
        try:
            merged[name] = Provider.build(
                name, str(ptype), hosts, base_path=base_path, upstream=upstream, enabled=enabled
            )
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return list(merged.values())


DEFAULT_CONSOLE_IDLE_TIMEOUT = 30 * 60.0  # seconds: a console session unused this long must sign in again


@dataclass(slots=True)
class Settings:
    listen: tuple[str, int] = ("127.0.0.1", 8888)
    admin_listen: tuple[str, int] = ("127.0.0.1", 8889)
    data_dir: Path = field(default_factory=default_data_dir)
    config_file: Path | None = None
    shutdown_grace: float = 10.0  # seconds in-flight streams get to finish on SIGTERM
    file: FileConfig = field(default_factory=FileConfig)
    structured_logging: bool = False  # one `interception log` line per committed record
    trace: bool = False  # OpenTelemetry spans per interception, exported over OTLP/HTTP (OTEL_* variables)
    trace_logs: bool = False  # with `trace`: log records become events on their interception's span
    metrics_initiator_label: bool = True  # False drops the per-user `initiator_id` label (large fleets)
    metrics_listen: tuple[str, int] | None = None  # /metrics on a listener of its own instead of the admin one
    metrics_token: str | None = None  # scrapes must send `Authorization: Bearer <token>`
    metrics_public: bool = False  # no token on a non-loopback listener: serve /metrics anyway (else 403)
    circuit_breaker: BreakerConfig = field(default_factory=BreakerConfig)  # off unless enabled
    retention: timedelta | None = timedelta(days=60)  # interceptions older than this are purged; None keeps all
    redaction_mode: str | None = None  # --redaction: off | redact | block; None: the config file's, else redact
    max_field_bytes: int | None = None  # --max-field-bytes; None: the config file's, else 256 KiB
    max_concurrency: int = 0  # requests in flight on provider hosts; 0 = no cap (spend/limits.py)
    rate_limit: float = 0.0  # requests per second per proxy token on provider hosts; 0 = no limit
    workers: int | None = None  # --workers / AIGW_WORKERS; None: the config file's, else 1 (one process)
    supervisor: bool | None = None  # --supervisor / AIGW_SUPERVISOR; None: the config file's (off)
    console_idle_timeout: float = DEFAULT_CONSOLE_IDLE_TIMEOUT  # --console-idle-timeout
    console_secure_cookie: bool = False  # --console-secure-cookie: behind a TLS terminator, the cookie is Secure
    event_loop: str = "auto"  # --event-loop: auto (uvloop where installed) | uvloop | asyncio (aio.EVENT_LOOPS)

    @property
    def worker_count(self) -> int:
        """Proxy processes: 1 runs the daemon as one process (no supervisor), as before workers existed."""
        return self.workers or self.file.workers or 1

    @property
    def supervised(self) -> bool:
        """The proxy runs in worker processes under a supervisor that serves the admin listener: always for more
        than one worker; for one if asked, so that the REST API's and the console's work never shares the GIL with
        the proxy's event loop, and a worker that dies is restarted."""
        asked = self.file.supervisor if self.supervisor is None else self.supervisor
        return self.worker_count > 1 or asked

    @property
    def redaction(self) -> RedactionConfig:
        """The config file's `[redaction]` with the command line's mode and cap applied over it."""
        cfg = self.file.redaction
        return RedactionConfig(
            mode=self.redaction_mode or cfg.mode,
            max_field_bytes=self.max_field_bytes or cfg.max_field_bytes or DEFAULT_MAX_FIELD_BYTES,
            patterns=cfg.patterns,
            allow=cfg.allow,
        )
    upstream_idle_timeout: float = 300.0  # seconds an upstream may send nothing before its call is cut; 0: off
    upstream_connect_timeout: float = 10.0  # seconds an upstream TCP connect (DNS included) may take; 0: the OS's
    spool_max_bytes: int = 256 * 1024 * 1024  # the record spool's bound (a failing database's backlog); 0: off
    database_url: str | None = field(default=None, repr=False)  # postgresql://…; None: the SQLite file below
    database_pool_size: int = 5  # reader connections per engine (PostgreSQL)
    database_statement_timeout: float = 60.0  # seconds a statement may run (PostgreSQL); 0: no limit
    capture_bodies: bool | None = None  # --capture-bodies / --no-capture-bodies; None: the config file's (off)
    capture_max_bytes: int | None = None  # --capture-max-bytes; None: the config file's, else 1 MiB

    @property
    def capture_enabled(self) -> bool:
        return self.file.capture_bodies if self.capture_bodies is None else self.capture_bodies

    @property
    def capture_limit(self) -> int:
        """Bytes kept of each captured body."""
        return self.capture_max_bytes or self.file.capture_max_bytes or DEFAULT_CAPTURE_MAX_BYTES

    @property
    def database_path(self) -> Path:
        """The SQLite file, when no database URL is set."""
        return self.data_dir / "aigw-proxy.db"

    @property
    def database(self) -> DatabaseConfig:
        """The records' database: `database_url` if set, else the SQLite file in the data directory."""
        from aigw_proxy.storage.database import DatabaseConfig

        try:
            if self.database_url:
                return DatabaseConfig.of(self.database_url, pool_size=self.database_pool_size,
                                         statement_timeout=self.database_statement_timeout)
            return DatabaseConfig(path=self.database_path, pool_size=self.database_pool_size,
                                  statement_timeout=self.database_statement_timeout)
        except ValueError as exc:
            raise ConfigError(f"--database-url: {exc}") from None

    @property
    def confdir(self) -> Path:
        return self.data_dir / "ca"
