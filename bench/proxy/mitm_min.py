"""mitm-min: mitmproxy embedded the way the daemon embeds it (the same options, the daemon's own list of built-in
addons, `mitmproxy_builtins()`, the same event loop, the same relay fast paths, the same garbage-collector freeze
once started), plus the benchmark's redirect addon and nothing else.
Compared with aigw-proxy it shows what aigw's own addons and recording cost.

    python -m bench.proxy.mitm_min --listen-port P --confdir D --upstream-ca CA.pem --redirect 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal

from mitmproxy import options
from mitmproxy.master import Master

from aigw_proxy.aio import EVENT_LOOPS, run
from aigw_proxy.proxy.daemon import mitmproxy_builtins
from aigw_proxy.proxy.relay_fast_paths import install as install_relay_fast_paths
from bench.addons.redirect import Redirect
from bench.proxy.workload import LOOPBACK


class FreezeGarbageCollector:
    """As the daemon does once started: move start-up's long-lived objects out of future full collections."""

    def running(self) -> None:
        gc.collect()
        gc.freeze()


async def serve(listen_port: int, confdir: str, upstream_ca: str, redirect: str) -> None:
    opts = options.Options(listen_host=LOOPBACK, listen_port=listen_port, confdir=confdir, mode=["regular"],
                           ssl_insecure=False)
    install_relay_fast_paths()  # as the daemon does
    master = Master(opts)
    master.addons.add(Redirect())  # first, as the daemon registers its own addons before mitmproxy's
    master.addons.add(*mitmproxy_builtins())
    master.addons.add(FreezeGarbageCollector())  # last: its `running` comes after every other addon's
    opts.update(bench_redirect=redirect, ssl_verify_upstream_trusted_ca=upstream_ca)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, master.shutdown)
    await master.run()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen-port", type=int, required=True)
    ap.add_argument("--confdir", required=True, help="mitmproxy confdir (its CA is created there)")
    ap.add_argument("--upstream-ca", required=True, help="PEM file trusted for the stand-in's certificate")
    ap.add_argument("--redirect", required=True, help="host:port of the stand-in")
    ap.add_argument("--event-loop", default=os.environ.get("AIGW_EVENT_LOOP", "auto").lower(), choices=EVENT_LOOPS,
                    help="as aigw-proxy's --event-loop (default: $AIGW_EVENT_LOOP, as aigw-proxy's)")
    args = ap.parse_args()
    run(serve(args.listen_port, args.confdir, args.upstream_ca, args.redirect), args.event_loop)


if __name__ == "__main__":
    main()
