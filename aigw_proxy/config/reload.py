"""Provider reload (docs/compatibility.md#provider-reload): re-read the config file on SIGHUP, when it changes on
disk, and every 5 min.

Unlike start-up, which refuses any invalid config, a reload is lenient per provider: a provider that cannot be
routed (unknown type, bad upstream URL, invalid name, a host another provider already claims) gets status `error`
and is left out, while the others keep working. A file that cannot be used at all (unreadable, invalid TOML, a
bad top-level setting) fails the reload: the previous routing stays and only the attempt timestamp moves.
Open tunnels keep the decision they were made with (`ProviderRouter.apply` swaps the snapshot for new CONNECTs).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aigw_proxy.config.settings import ConfigError, FileConfig, merge_providers, parse_file_config
from aigw_proxy.policy.providers import Provider, builtin_providers
from aigw_proxy.telemetry.metrics import Metrics

log = logging.getLogger("aigw_proxy.reload")

WATCH_INTERVAL = 2.0  # seconds between two looks at the file's mtime and size
PERIOD = 300.0  # the backstop: reload this often whatever happened

Status = Literal["enabled", "disabled", "error"]


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    name: str
    type: str
    status: Status
    error: str | None = None


@dataclass(slots=True)
class Evaluation:
    config: FileConfig
    providers: list[ProviderStatus] = field(default_factory=list)
    fingerprint: tuple[int, int, str] | None = None  # (mtime_ns, size, sha256) of the file read


def statuses_of(providers: list[Provider]) -> list[ProviderStatus]:
    return [ProviderStatus(p.name, p.type, "enabled" if p.enabled else "disabled") for p in providers]


def _read(path: Path) -> tuple[dict[str, Any], tuple[int, int, str]]:
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    fingerprint = (st.st_mtime_ns, st.st_size, hashlib.sha256(data).hexdigest())
    try:
        return tomllib.loads(data.decode("utf-8")), fingerprint
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def evaluate_config(path: Path | None) -> Evaluation:
    """The routing a reload would apply, with each provider's status. Raises ConfigError when the file cannot be
    used at all. Blocking (file I/O): call it off the event loop."""
    if path is None:
        cfg = FileConfig()
        return Evaluation(cfg, statuses_of(cfg.providers))
    raw, fingerprint = _read(path)
    entries = raw.pop("providers", [])
    try:
        cfg = parse_file_config(raw, base_dir=path.parent)  # top-level settings: all or nothing
        if not isinstance(entries, list):
            raise ConfigError("providers must be an array of tables ([[providers]])")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    merged: dict[str, Provider | ProviderStatus] = {p.name: p for p in builtin_providers()}
    failed: list[ProviderStatus] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        label = name if isinstance(name, str) and name else f"providers[{i}]"
        base = merged.get(label)
        ptype = entry.get("type") if isinstance(entry, dict) else None
        ptype = str(ptype) if ptype is not None else (base.type if base is not None else "unknown")
        if label in seen:
            failed.append(ProviderStatus(label, ptype, "error", f"provider name {label!r} is used twice"))
            continue
        seen.add(label)
        try:
            # One entry at a time over the built-ins: the same validation as start-up, per provider.
            built = next(p for p in merge_providers([entry]) if p.name == label)
        except (ConfigError, StopIteration) as exc:
            merged[label] = ProviderStatus(label, ptype, "error", str(exc) or "invalid provider entry")
            continue
        merged[label] = built
    providers: list[Provider] = []
    statuses: list[ProviderStatus] = []
    claimed: dict[str, str] = {}
    for item in merged.values():
        if isinstance(item, ProviderStatus):
            statuses.append(item)
            continue
        taken = [h for h in item.hosts if h in claimed] if item.enabled else []
        if taken:
            why = f"host {taken[0]!r} is already claimed by provider {claimed[taken[0]]!r}"
            statuses.append(ProviderStatus(item.name, item.type, "error", why))
            continue
        if item.enabled:
            claimed.update(dict.fromkeys(item.hosts, item.name))
        providers.append(item)
        statuses.append(ProviderStatus(item.name, item.type, "enabled" if item.enabled else "disabled"))
    cfg.providers = providers
    cfg.provider_table()  # cannot raise: duplicate hosts were excluded above
    return Evaluation(cfg, statuses + failed, fingerprint)


class Reloader:
    """Runs reloads one at a time and applies successful ones with `apply(config)`."""

    def __init__(self, path: Path | None, apply: Callable[[FileConfig], None], metrics: Metrics, *,
                 watch_interval: float = WATCH_INTERVAL, period: float = PERIOD) -> None:
        self.path = path
        self._apply = apply
        self.m = metrics
        self.watch_interval = watch_interval
        self.period = period
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[object]] = set()
        self._seen: tuple[int, int, str] | None = None  # the file as last read
        self.last_statuses: list[ProviderStatus] = []

    def initial(self, cfg: FileConfig) -> None:
        """Report the configuration the daemon started with (validated strictly at start-up)."""
        self.last_statuses = statuses_of(cfg.providers)
        self.m.set_provider_statuses((s.name, s.type, s.status) for s in self.last_statuses)
        self.m.stamp_reload(success=True)
        if self.path is not None:
            try:
                _, self._seen = _read(self.path)
            except ConfigError:
                self._seen = None

    def start(self) -> None:
        self._spawn(self._every(self.period, "periodic"))
        if self.path is not None:
            self._spawn(self._watch())

    def trigger(self, reason: str) -> None:
        """Reload soon (from a signal handler or any other non-async caller)."""
        self._spawn(self.reload(reason))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def reload(self, reason: str) -> bool:
        """Re-read the config and apply it; False (previous routing kept) when the file cannot be used."""
        async with self._lock:
            try:
                ev = await asyncio.to_thread(evaluate_config, self.path)
            except ConfigError as exc:
                self.m.stamp_reload(success=False)
                log.error("provider reload (%s) failed, keeping the previous routing: %s", reason, exc)
                return False
            except Exception:
                self.m.stamp_reload(success=False)
                log.exception("provider reload (%s) failed, keeping the previous routing", reason)
                return False
            self._seen = ev.fingerprint
            self._apply(ev.config)
            self.last_statuses = ev.providers
            self.m.set_provider_statuses((s.name, s.type, s.status) for s in ev.providers)
            self.m.stamp_reload(success=True)
            for s in ev.providers:
                if s.status == "error":
                    log.warning("provider %s excluded from routing: %s", s.name, s.error)
            counts = {k: sum(s.status == k for s in ev.providers) for k in ("enabled", "disabled", "error")}
            log.info("providers reloaded (%s): %d enabled, %d disabled, %d error", reason, *counts.values())
            return True

    async def _every(self, seconds: float, reason: str) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self.reload(reason)

    async def _watch(self) -> None:
        assert self.path is not None
        while True:
            await asyncio.sleep(self.watch_interval)
            state = await asyncio.to_thread(_file_state, self.path, self._seen)
            before, self._seen = self._seen, state  # react once per change, whether or not the reload succeeds
            if (state and state[2]) != (before and before[2]):
                await self.reload("file changed")


def _file_state(path: Path, known: tuple[int, int, str] | None) -> tuple[int, int, str] | None:
    """(mtime_ns, size, sha256) of the file, or None when it cannot be read. The content is read and hashed only
    when the mtime or size moved; the caller compares hashes, so rewriting the same bytes is no change."""
    try:
        st = os.stat(path)
        if known is not None and (st.st_mtime_ns, st.st_size) == known[:2]:
            return known
        return st.st_mtime_ns, st.st_size, hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
