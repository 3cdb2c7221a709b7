"""Count requests in flight so a graceful shutdown can wait for running streams to finish."""

from __future__ import annotations

import asyncio

from mitmproxy import http


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        flow.metadata["aigw.inflight"] = True
        self.count += 1
        self._idle.clear()

    def _done(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.pop("aigw.inflight", False):
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    def response(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    async def wait_idle(self, grace: float) -> bool:
        """True when nothing is in flight any more, False when `grace` seconds ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
            return True
        except TimeoutError:
            return False
