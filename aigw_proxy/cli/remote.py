"""Remote mode for the read commands: with `--url` and `--token` (or AIGW_URL / AIGW_TOKEN) they call the REST
API of a running proxy instead of opening the local database, and print the same JSON."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from aigw_proxy.cli.common import fail

API_PREFIX = "/api/v2/ai-gateway"


def remote_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--token", envvar="AIGW_TOKEN", default=None,
                     help="API token (a user's proxy token; admins see everyone's records).")(f)
    return click.option("--url", envvar="AIGW_URL", default=None,
                        help="Admin URL of a running proxy, e.g. http://127.0.0.1:8889 (remote mode).")(f)


def search_query(**terms: str | datetime | None) -> str:
    """`key:"value"` terms, quoted so values keep their spaces (as Coder's client builds `q`)."""
    parts = []
    for key, value in terms.items():
        if value is None:
            continue
        text = value.isoformat() if isinstance(value, datetime) else value
        if '"' in text:
            raise click.BadParameter(f"{key} must not contain a double quote")
        parts.append(f'{key}:"{text}"')
    return " ".join(parts)


def api_get(url: str, token: str | None, path: str, params: dict[str, Any]) -> Any:
    """GET a JSON document from the API; any error becomes a clear exit (never echoing the token)."""
    if not token:
        fail("remote mode needs --token (or AIGW_TOKEN)")
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None and v != ""})
    full = url.rstrip("/") + API_PREFIX + path + (f"?{query}" if query else "")
    request = urllib.request.Request(full, headers={"Coder-Session-Token": token, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
            message = body.get("message", "") + (f" ({body['detail']})" if body.get("detail") else "")
        except (ValueError, AttributeError):
            message = exc.reason
        fail(f"{exc.code} from {url}: {message}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        fail(f"cannot reach {url}: {getattr(exc, 'reason', exc)}")
