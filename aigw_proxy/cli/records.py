"""`aigw-proxy interceptions …`: read the records, from the local database or a running proxy's API."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from aigw_proxy.cli.common import fail, print_json, storage_call, storage_options
from aigw_proxy.cli.main import main
from aigw_proxy.cli.remote import api_get, remote_options, search_query


def _rfc3339(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an RFC 3339 time", param_hint=flag) from None
    if dt.tzinfo is None:
        raise click.BadParameter(f"{value!r} needs a UTC offset (e.g. Z)", param_hint=flag)
    return dt


def filter_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The filters shared by `interceptions list` and `sessions list` (docs/compatibility.md#cli)."""
    for option in reversed([
        click.option("--initiator", help="User name or id ('me' with --url: the token's user)."),
        click.option("--provider", help="Provider type (anthropic, openai, copilot, gemini)."),
        click.option("--provider-name", help="Provider name (e.g. chatgpt)."),
        click.option("--model"),
        click.option("--client", help="Client name, e.g. 'Claude Code'."),
        click.option("--session-id", help="Only this session."),
        click.option("--started-after", help="RFC 3339 time."),
        click.option("--started-before", help="RFC 3339 time."),
        click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True),
    ]):
        f = option(f)
    return f


def filter_terms(kw: dict[str, Any]) -> dict[str, Any]:
    """The filter flags as storage/search terms (times parsed and checked)."""
    return {
        "initiator": kw["initiator"], "provider": kw["provider"], "provider_name": kw["provider_name"],
        "model": kw["model"], "client": kw["client"], "session_id": kw["session_id"],
        "started_after": _rfc3339(kw["started_after"], "--started-after"),
        "started_before": _rfc3339(kw["started_before"], "--started-before"),
    }


def local_filter(terms: dict[str, Any]) -> Any:
    from aigw_proxy.storage import InterceptionFilter

    if terms["initiator"] == "me":
        raise click.BadParameter("'me' needs remote mode (--url and --token)", param_hint="--initiator")
    return InterceptionFilter(**terms)


@main.group()
def interceptions() -> None:
    """Read recorded interceptions."""


@interceptions.command("list")
@filter_options
@click.option("--after-id", help="Cursor: the id of the last result of the previous page.")
@remote_options
@storage_options
def interceptions_list(after_id: str | None, url: str | None, token: str | None, data_dir: Path,
                       **kw: Any) -> None:
    """Print ended interceptions as a JSON array, newest first."""
    from aigw_proxy.storage import list_interceptions

    print_page(kw, url, token, data_dir, path="/interceptions", key="results", cursor=("after_id", after_id),
               read=lambda db, flt: list_interceptions(db, flt, limit=kw["limit"], after_id=after_id))


def print_page(kw: dict[str, Any], url: str | None, token: str | None, data_dir: Path, *, path: str, key: str,
               cursor: tuple[str, str | None], read: Callable[[Any, Any], Coroutine[Any, Any, Any]]) -> None:
    """Print one page of a filtered list as a JSON array: from the API at ``url`` (``path``, the page under
    ``key``) with ``--url``, else ``read(db, filter)`` on the local database."""
    terms = filter_terms(kw)
    if url:
        body = api_get(url, token, path, {"q": search_query(**terms), "limit": kw["limit"], cursor[0]: cursor[1]})
        print_json(body[key])
        return
    flt = local_filter(terms)
    print_json(storage_call(data_dir, lambda db: read(db, flt)))


@interceptions.command("capture")
@click.argument("interception_id")
@click.option("--json", "as_json", is_flag=True, help="Print the capture as the REST API returns it.")
@click.option("--body", type=click.Choice(["request", "response"]), default=None,
              help="Print only this body, as stored (for a pipe: `| jq .`).")
@remote_options
@storage_options
def interceptions_capture(interception_id: str, as_json: bool, body: str | None, url: str | None,
                          token: str | None, data_dir: Path) -> None:
    """Print an interception's raw capture (recorded with --capture-bodies): headers without credentials, bodies
    with secrets redacted, sizes and truncation."""
    if url:
        import urllib.parse

        found = api_get(url, token, f"/interceptions/{urllib.parse.quote(interception_id, safe='')}/capture", {})
    else:
        from aigw_proxy.storage import get_capture

        found = storage_call(data_dir, lambda db: get_capture(db, interception_id))
        if found is None:
            fail(f"no capture of interception {interception_id!r} (recorded only with --capture-bodies)")
    if as_json:
        print_json(found)
    elif body is not None:
        click.echo(found[body]["body"], nl=False)
    else:
        click.echo(format_capture(found), nl=False)


def _pretty_body(text: str) -> str:
    import json

    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def _size_note(part: dict[str, Any], what: str) -> str:
    if part["truncated"]:
        return f"[{what}: truncated, {part['stored_bytes']} of {part['size']} bytes kept]"
    return f"[{what}: {part['size']} bytes]"


def format_capture(c: dict[str, Any]) -> str:
    """A capture as text: the request (`>` lines), then the response (`<` lines), curl -v style."""
    req, resp = c["request"], c["response"]
    lines = [f"interception {c['interception_id']} ({c['transport']}, captured {c['created_at']})"]
    if c["redactions"]:
        lines.append("redacted: " + ", ".join(f"{k} {n}" for k, n in c["redactions"].items()))
    lines += ["", f"> {req['method']} {req['route']}", *(f"> {k}: {v}" for k, v in req["headers"].items()), ">"]
    lines += [_pretty_body(req["body"]), _size_note(req, "request body"), ""]
    status = resp["status"] if resp["status"] is not None else "(no response)"
    lines += [f"< {status}" + (" (streamed)" if resp["streamed"] else ""),
              *(f"< {k}: {v}" for k, v in resp["headers"].items()), "<"]
    lines += [resp["body"] if resp["streamed"] else _pretty_body(resp["body"]), _size_note(resp, "response body")]
    return "\n".join(lines) + "\n"
