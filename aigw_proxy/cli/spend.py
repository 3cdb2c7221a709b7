"""`aigw-proxy spend` (the spend report, from the local database or a running proxy's API) and `aigw-proxy
reprice` (recompute the stored prices of a window on purpose)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from aigw_proxy.cli.common import fail, print_json, storage_call, storage_options
from aigw_proxy.cli.main import main
from aigw_proxy.cli.remote import api_get, remote_options, search_query

GROUPINGS = ("user", "model", "client", "provider", "day")  # storage.SPEND_GROUPINGS, without importing storage
_ONE_MICROSECOND = timedelta(microseconds=1)


def _when(value: str | None, flag: str) -> datetime | None:
    """An RFC 3339 time with an offset, or a date (its UTC midnight)."""
    if value is None:
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (2026-05-01) or an RFC 3339 time", param_hint=flag) from None
    if dt.tzinfo is None:
        raise click.BadParameter(f"{value!r} needs a UTC offset (e.g. Z)", param_hint=flag)
    return dt


def _window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    start, end = _when(since, "--since"), _when(until, "--until")
    if start is not None and end is not None and end <= start:
        raise click.BadParameter("--until must be after --since", param_hint="--until")
    return start, end


def _usd(value: float | None) -> str:
    return "unpriced" if value is None else f"${value:,.4f}"


def _table(report: dict[str, Any]) -> str:
    rows = [(g["key"], g) for g in report["groups"]] + [("TOTAL", report["total"])]
    width = max(len(str(k)) for k, _ in rows)
    head = (f"{report['by'] or '':<{width}}  {'records':>8}  {'input':>12}  {'output':>11}  {'cache read':>12}  "
            f"{'cache write':>11}  {'cost':>12}  {'API-equivalent':>14}  unpriced")
    lines = [head]
    for key, g in rows:
        c = g["cost"]
        lines.append(
            f"{key!s:<{width}}  {g['records']:>8}  {g['input_tokens']:>12,}  {g['output_tokens']:>11,}  "
            f"{g['cache_read_input_tokens']:>12,}  {g['cache_write_input_tokens']:>11,}  {_usd(c['cost_usd']):>12}  "
            f"{_usd(c['api_equivalent_usd']):>14}  {c['unpriced_records']}")
    return "\n".join(lines)


@main.command()
@click.option("--by", type=click.Choice(GROUPINGS), default="user", show_default=True,
              help="Group by user, model, client, provider (name) or UTC day.")
@click.option("--since", help="From this time (RFC 3339) or date (UTC midnight), inclusive.")
@click.option("--until", help="Until this time or date, exclusive.")
@click.option("--initiator", help="User name or id ('me' with --url: the token's user).")
@click.option("--provider", help="Provider type (anthropic, openai, copilot, gemini).")
@click.option("--provider-name", help="Provider name (e.g. chatgpt).")
@click.option("--model")
@click.option("--client", help="Client name, e.g. 'Claude Code'.")
@click.option("--session-id", help="Only this session.")
@click.option("--format", "output", type=click.Choice(("json", "table")), default="json", show_default=True)
@remote_options
@storage_options
def spend(by: str, since: str | None, until: str | None, output: str, url: str | None, token: str | None,
          data_dir: Path, **kw: Any) -> None:
    """Token usage and cost of the interceptions started in a window, in total and grouped.

    Cost is the price stored with each token-usage row when it was written. API-equivalent value (subscription
    calls: Claude plan, ChatGPT-plan Codex, Copilot, priced at the API list price) is reported apart from the
    cost billed per token; a row whose model has no price is unpriced (counted, never $0)."""
    start, end = _window(since, until)
    before = end - _ONE_MICROSECOND if end is not None else None  # started_before is inclusive
    if url:
        report = api_get(url, token, "/spend", {"by": by, "q": search_query(
            **kw, started_after=start, started_before=before)})
    else:
        if kw["initiator"] == "me":
            raise click.BadParameter("'me' needs remote mode (--url and --token)", param_hint="--initiator")
        from aigw_proxy.storage import InterceptionFilter, spend_report

        flt = InterceptionFilter(**kw, started_after=start, started_before=before)
        report = storage_call(data_dir, lambda db: spend_report(db, flt, by=by))
    if output == "table":
        click.echo(_table(report))
    else:
        print_json(report)


@main.command()
@click.option("--since", required=True, help="Interceptions started from this time (RFC 3339) or date, inclusive.")
@click.option("--until", help="Until this time or date, exclusive (default: now).")
@click.option("--unpriced-only", is_flag=True,
              help="Only rows without a price (e.g. after adding a [[prices]] table for their model).")
@click.option("--config", "config_file", envvar="AIGW_CONFIG", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="TOML config file whose [[prices]] apply (as `aigw-proxy run --config`).")
@storage_options
def reprice(since: str, until: str | None, unpriced_only: bool, config_file: Path | None, data_dir: Path) -> None:
    """Recompute the stored prices of the token-usage rows of a window with today's prices (the bundled price
    data and the config's [[prices]]), and the daily spend sums with them; print the counts.

    Prices are fixed when a row is written, so a price change never rewrites history by itself: this does, for
    the window asked. Safe while the proxy runs (short transactions)."""
    from aigw_proxy.config.settings import ConfigError, load_file_config
    from aigw_proxy.spend import Pricer, library_version
    from aigw_proxy.storage import reprice as reprice_window
    from aigw_proxy.storage import rfc3339

    start, end = _window(since, until)
    try:
        cfg = load_file_config(config_file)
    except ConfigError as exc:
        fail(str(exc))
    pricer = Pricer(cfg.prices)
    result = storage_call(data_dir, lambda db: reprice_window(db, pricer, since=start, until=end,
                                                              unpriced_only=unpriced_only))
    print_json({
        "since": rfc3339(start) if start is not None else None,
        "until": rfc3339(end) if end is not None else None,
        "rows": result.rows,
        "changed": result.changed,
        "priced": result.priced,
        "unpriced": result.unpriced,
        "previously_unpriced": result.was_unpriced,
        "price_data": f"genai-prices {library_version()}",
        "price_overrides": len(cfg.prices),
    })
