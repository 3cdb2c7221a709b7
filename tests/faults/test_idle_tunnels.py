"""1,000 idle tunnels held open through a real daemon (raw sockets CONNECTing to a loopback origin that is not a
provider, so they are tunnelled, never decrypted): model calls keep being served and recorded, health stays ok,
and the proxy's memory and file descriptors grow by a bounded amount per tunnel and come back once they close."""

from __future__ import annotations

import asyncio
import base64
import os
import resource
import time
from pathlib import Path

import pytest

from tests.support.bursts import burst, default_reply, stream_reply
from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.standin import StandIn

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TUNNELS = 1000
MAX_BYTES_PER_TUNNEL = 256 * 1024  # generous: measured well under it (printed)


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def open_tunnels(d: Daemon, origin_port: int, n: int) -> list[asyncio.StreamWriter]:
    auth = base64.b64encode(f"alice:{d.token('alice')}".encode()).decode()
    request = (f"CONNECT 127.0.0.1:{origin_port} HTTP/1.1\r\nHost: 127.0.0.1:{origin_port}\r\n"
               f"Proxy-Authorization: Basic {auth}\r\n\r\n").encode()
    gate = asyncio.Semaphore(100)

    async def one() -> asyncio.StreamWriter:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            assert head.startswith(b"HTTP/1.1 200"), head
            return writer

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def close_tunnels(tunnels: list[asyncio.StreamWriter]) -> None:
    for writer in tunnels:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for w in tunnels), return_exceptions=True)


def test_a_thousand_idle_tunnels_leave_the_proxy_serving(
    tmp_path: Path, standin_server: StandIn, origin_server: StandIn, upstream_pki: UpstreamPKI
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4 * TUNNELS + 200:
        pytest.skip(f"ulimit -n {hard}: too low for {TUNNELS} tunnels (each holds a socket here and two in the proxy)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * TUNNELS + 500)), hard))
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file, ports=[origin_server.port]))
    assert d.proc is not None
    pid = d.proc.pid
    loop = asyncio.new_event_loop()
    try:
        with default_reply(standin_server, stream_reply()):
            assert all(c.done for c in burst(d, [f"warm-up {n}" for n in range(20)], workers=4))
            fds0, rss0 = fds(pid), rss(pid)
            tunnels = loop.run_until_complete(open_tunnels(d, origin_server.port, TUNNELS))
            time.sleep(1.0)
            fds1, rss1 = fds(pid), rss(pid)
            calls = burst(d, [f"among idle tunnels {n}" for n in range(30)], workers=4)
            assert [c.error for c in calls if c.done is None] == []
            assert len(d.interceptions(expect=50)) == 50
            assert d.healthz()["status"] == "ok"
            per_tunnel = (rss1 - rss0) / TUNNELS
            print(f"{TUNNELS} idle tunnels: +{fds1 - fds0} fds, +{(rss1 - rss0) / 2**20:.1f} MiB "
                  f"({per_tunnel / 1024:.0f} KiB each)")
            assert fds1 - fds0 <= 2 * TUNNELS + 50  # the client's socket and the origin's, nothing more
            assert per_tunnel <= MAX_BYTES_PER_TUNNEL
            loop.run_until_complete(close_tunnels(tunnels))
            deadline = time.monotonic() + 30
            while fds(pid) > fds0 + 20 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert fds(pid) <= fds0 + 20  # all given back
    finally:
        loop.close()
        stop_daemon(d)
