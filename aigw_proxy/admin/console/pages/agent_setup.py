"""Set-up: how to point an agent at the proxy, the MITM CA certificate to download, a self-test."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from aigw_proxy.admin.console.auth import Viewer
from aigw_proxy.admin.console.core import Console
from aigw_proxy.proxy.ca import CERT_FILE


async def setup_page(console: Console, request: Request, viewer: Viewer) -> Response:
    have_ca = (console.confdir / CERT_FILE).is_file()
    return console.render(request, viewer, "setup.html", {"proxy": console.proxy_for(request), "have_ca": have_ca})


async def ca_cert(console: Console, request: Request, viewer: Viewer) -> Response:
    pem = console.confdir / CERT_FILE
    if not pem.is_file():
        return console.error(request, viewer, 404, "The MITM CA certificate is not configured.")
    return Response(pem.read_bytes(), 200, {"Content-Disposition": "attachment; filename=aigw-proxy-ca.pem"},
                    media_type="application/x-pem-file")
