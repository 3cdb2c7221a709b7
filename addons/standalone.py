"""aigw-proxy's recording inside a plain mitmproxy, for users who already run one:

    mitmdump -s addons/standalone.py --set aigw_data_dir=/var/lib/aigw-proxy [--set aigw_config=aigw.toml]

(from an installed package: `mitmdump -s "$(python -c 'import aigw_proxy.addons.standalone as m; print(m.__file__)')"`).

It loads the daemon's own addons — proxy-token authentication, provider routing (decrypt provider hosts, tunnel
the rest, the private-address and port policy), the Interceptor and the Responses WebSocket recorder, records
capped and redacted by the config's `[redaction]` — and records into the same database, so `aigw-proxy users
add`, `aigw-proxy interceptions list --data-dir DIR` and a daemon's REST API on that data dir work with it. What
the daemon adds around mitmproxy stays out: the admin listener, metrics, provider reload, retention. mitmproxy's
own options (its CA in `confdir`, upstream trust) are yours to set.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from mitmproxy import ctx
from mitmproxy.addonmanager import Loader

from aigw_proxy.addons.auth import TokenAuth
from aigw_proxy.addons.intercept import Interceptor
from aigw_proxy.addons.routing import ProviderRouter
from aigw_proxy.addons.secrets_gate import SecretsGate
from aigw_proxy.addons.websocket import ResponsesSocket
from aigw_proxy.config.settings import ConfigError, Settings, default_data_dir, load_file_config
from aigw_proxy.policy.identity import TokenAuthenticator
from aigw_proxy.recording.records import Initiator, RecordEvent
from aigw_proxy.redaction.records import RecordPolicy
from aigw_proxy.spend import Pricer, library_version
from aigw_proxy.storage import Database, RecordWriter, UserStore, open_database

log = logging.getLogger("aigw_proxy.standalone")


class AigwStandalone:
    """Our addon chain as one script addon. The chain exists from `configure` on, so no request slips through
    unauthenticated while the database opens in `running`: token checks wait for it, records queue for it."""

    def __init__(self) -> None:
        self.addons: list[object] = []
        self._db: Database | None = None
        self._writer: RecordWriter | None = None
        self._ready = asyncio.Event()
        self._early: list[RecordEvent] = []  # records made before the writer started
        self._pricer = Pricer()  # with the config's [[prices]] once configured

    def load(self, loader: Loader) -> None:
        loader.add_option("aigw_data_dir", str, str(default_data_dir()),
                          "aigw-proxy data directory: its SQLite database holds users, tokens and records.")
        loader.add_option("aigw_config", str, "",
                          "aigw-proxy TOML config file (providers, upstream overrides, allowed ports); "
                          "empty: the built-in providers.")

    def configure(self, updated: set[str]) -> None:
        if self.addons or not ({"aigw_config", "aigw_data_dir"} & updated or not updated):
            return
        try:
            cfg = load_file_config(Path(ctx.options.aigw_config) if ctx.options.aigw_config else None)
        except ConfigError as exc:
            raise ValueError(f"aigw_config: {exc}") from None
        # Records capped and redacted as the daemon's are, by the config file's [redaction] (mode, cap, patterns).
        policy = RecordPolicy.from_config(cfg.redaction)
        submit = policy.wrap(self._submit)
        gates = [SecretsGate(policy.redactor)] if cfg.redaction.mode == "block" and policy.redactor else []
        self._pricer = Pricer(cfg.prices)
        self.addons = [TokenAuth(TokenAuthenticator(self._authenticate, timeout=10.0)), ProviderRouter(cfg),
                       *gates, Interceptor(submit), ResponsesSocket(submit)]

    async def running(self) -> None:
        if self._writer is not None:
            return
        settings = Settings(data_dir=Path(ctx.options.aigw_data_dir))
        self._db = await open_database(settings.database_path)
        await asyncio.to_thread(library_version)  # the price data loads in ~0.5 s: not on the loop
        self._writer = RecordWriter(self._db, pricer=self._pricer)
        self._writer.start()
        for event in self._early:
            self._writer.submit(event)
        self._early.clear()
        self._ready.set()
        log.info("aigw-proxy recording into %s", settings.database_path)

    async def done(self) -> None:
        if self._writer is not None:
            await self._writer.close(30)
        if self._db is not None:
            await self._db.close()

    async def _authenticate(self, token: str) -> Initiator | None:
        await self._ready.wait()
        assert self._db is not None
        return await UserStore(self._db).authenticate(token)

    def _submit(self, event: RecordEvent) -> bool:
        if self._writer is None:
            self._early.append(event)
            return True
        return self._writer.submit(event)


addons = [AigwStandalone()]
