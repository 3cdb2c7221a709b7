"""Startup check, registered last: mitmproxy only *logs* a failed bind or an unusable CA and keeps running,
so the daemon asks this addon whether the proxy really came up and exits with a clear message if not."""

from __future__ import annotations

import asyncio

from mitmproxy import ctx


class Readiness:
    def __init__(self) -> None:
        self.result: asyncio.Future[list[tuple[str, int]]] = asyncio.get_running_loop().create_future()

    def running(self) -> None:
        if self.result.done():
            return
        ps = ctx.master.addons.get("proxyserver")
        addrs = [(a[0], a[1]) for a in ps.listen_addrs()] if ps else []
        if not addrs:
            opts = ctx.options
            self.result.set_exception(
                RuntimeError(f"cannot listen on {opts.listen_host}:{opts.listen_port} (address in use?)")
            )
            return
        tls = ctx.master.addons.get("tlsconfig")
        if tls is None or tls.certstore is None:
            self.result.set_exception(RuntimeError(f"cannot load the CA from {ctx.options.confdir}"))
            return
        self.result.set_result(addrs)
