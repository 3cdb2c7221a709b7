"""`--upstream-connect-timeout`: bound how long the proxy waits for an upstream TCP connection (DNS included).

mitmproxy 12 has no connect timeout of its own (its only timeout, `tcp_timeout`, is for idle connections): a
host that drops SYNs keeps `asyncio.open_connection` waiting for the kernel's retries, about two minutes on
Linux. mitmproxy runs the connect in the task that calls the `server_connect` hook, so this addon arms a timer
there and, if the connection is still not up when it fires, cancels that task with a message; mitmproxy turns
the cancelled connect into its usual failure with that message as the error: a 502 on the CONNECT for a tunnel
(eager dial), a 502 whose body says why for a request whose connection is opened later (a plain proxied request,
a reconnect inside a decrypted tunnel; that model call is recorded failed with `error_type` `timeout`). Each one
is logged and counted (`aigw_proxy_upstream_connect_timeouts_total{type}`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from mitmproxy.proxy import server_hooks

from aigw_proxy.addons.routing import ProviderRouter

if TYPE_CHECKING:
    from aigw_proxy.telemetry.metrics import Metrics

log = logging.getLogger("aigw_proxy.connect")

DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Final = 10.0  # seconds; see README "Timeouts"
CONNECT_TIMED_OUT: Final = "upstream connect timed out"  # how the error text starts (failure_cause reads it)


def connect_timeout_message(address: tuple[str, int] | None, timeout: float) -> str:
    where = f"{address[0]}:{address[1]}" if address else "the upstream"
    return f"{CONNECT_TIMED_OUT}: {where} did not answer within {timeout:g} s (--upstream-connect-timeout)"


class UpstreamConnectTimeout:
    def __init__(self, timeout: float, router: ProviderRouter | None = None, metrics: Metrics | None = None) -> None:
        self.timeout = timeout  # 0: off (the operating system's own limit applies)
        self.router = router
        self.metrics = metrics
        self._timers: dict[str, asyncio.TimerHandle] = {}  # server connection id -> its timer

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if self.timeout <= 0 or data.server.error:  # refused by an earlier addon: no connect is made
            return
        task = asyncio.current_task()  # the task that will run the connect once the hooks return
        if task is None:
            return
        old = self._timers.pop(data.server.id, None)
        if old is not None:
            old.cancel()
        self._timers[data.server.id] = asyncio.get_running_loop().call_later(self.timeout, self._expire, data, task)

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._disarm(data)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._disarm(data)

    def _disarm(self, data: server_hooks.ServerConnectionHookData) -> None:
        timer = self._timers.pop(data.server.id, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, data: server_hooks.ServerConnectionHookData, task: asyncio.Task[object]) -> None:
        self._timers.pop(data.server.id, None)
        server = data.server
        if server.timestamp_tcp_setup is not None or task.done():  # connected meanwhile
            return
        kind = self._kind(data)
        log.warning("upstream %s did not answer within %g s: connect abandoned (%s; --upstream-connect-timeout)",
                    f"{server.address[0]}:{server.address[1]}" if server.address else "?", self.timeout, kind)
        if self.metrics is not None:
            self.metrics.connect_timeouts.labels(kind).inc()
        task.cancel(connect_timeout_message(server.address, self.timeout))

    def _kind(self, data: server_hooks.ServerConnectionHookData) -> str:
        """`mitm` for a decrypted provider host, `tunneled` for a raw tunnel, `plain` for a proxied request."""
        target = self.router.target_for(data.client.id) if self.router is not None else None
        if target is None:
            return "plain"
        return "mitm" if target.provider is not None else "tunneled"
