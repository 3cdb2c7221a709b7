"""Benchmark addon: send CONNECTs for the provider host to the stand-in, and stream responses, as aigw-proxy does.

A plain mitmproxy script, loaded into the bare-mitmproxy baseline with
    mitmdump -s bench/addons/redirect.py --set bench_redirect=127.0.0.1:PORT
and added to the embedded mitm-min master (bench/proxy/mitm_min.py). Its mitmproxy options:
    bench_redirect  host:port of the stand-in; empty (the default) redirects nothing
    bench_host      the CONNECT host to redirect (default api.anthropic.com)
"""

from __future__ import annotations

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader


class Redirect:
    def __init__(self) -> None:
        self.host = ""
        self.target: tuple[str, int] | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option("bench_redirect", str, "", "host:port to send CONNECTs for bench_host to")
        loader.add_option("bench_host", str, "api.anthropic.com", "the CONNECT host bench_redirect redirects")

    def configure(self, updated: set[str]) -> None:
        if not {"bench_redirect", "bench_host"} & updated:
            return
        self.host = ctx.options.bench_host
        raw: str = ctx.options.bench_redirect
        if not raw:
            self.target = None
            return
        host, _, port = raw.rpartition(":")
        if not host or not port.isdigit():
            raise exceptions.OptionsError(f"bench_redirect must be host:port, not {raw!r}")
        self.target = (host, int(port))

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if self.target is not None and flow.request.host == self.host:
            flow.request.host, flow.request.port = self.target

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            flow.response.stream = True


addons = [Redirect()]
