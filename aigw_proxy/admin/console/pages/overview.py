"""Overview: the window's figures (overview.py computes them), with the proxy's providers and shadow-AI hosts for
admins when the daemon's metrics registry is at hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from aigw_proxy.admin.console import columns as cols
from aigw_proxy.admin.console.auth import Viewer
from aigw_proxy.admin.console.core import Console
from aigw_proxy.admin.console.overview import WINDOWS, metric_samples


def _window(request: Request, now: datetime) -> tuple[str, datetime, datetime, str | None]:
    window = request.query_params.get("window") or "24h"
    if window == "custom":
        try:
            start = datetime.fromisoformat(request.query_params.get("from") or "").replace(tzinfo=UTC)
            end = datetime.fromisoformat(request.query_params.get("to") or "").replace(tzinfo=UTC)
            end = end + timedelta(days=1) - timedelta(microseconds=1)
            if end < start:
                raise ValueError("the end is before the start")
            if end - start > timedelta(days=366):
                raise ValueError("at most a year")
        except ValueError as exc:
            return "24h", now - WINDOWS["24h"], now, f"Custom window: {exc}"
        return window, start, end, None
    window = window if window in WINDOWS else "24h"
    return window, now - WINDOWS[window], now, None


async def overview_page(console: Console, request: Request, viewer: Viewer) -> Response:
    now = datetime.now(UTC)
    window, start, end, error = _window(request, now)
    by = request.query_params.get("by") or "model"
    data = await console.overview_cache.get(window, start, end, viewer.visible_to, by)
    peak = max((p["total"] for p in data.series), default=0) or 1
    providers, reload_at, shadow = None, None, None
    registry = console.registry
    if registry is not None and viewer.admin:
        providers = [labels for labels, value in metric_samples(registry, "coder_ai_gateway_provider_info")
                     if value]
        stamps = metric_samples(registry, "coder_ai_gateway_providers_last_reload_timestamp_seconds")
        reload_at = (datetime.fromtimestamp(stamps[0][1], UTC).isoformat().replace("+00:00", "Z")
                     if stamps and stamps[0][1] else None)
        shadow = sorted(((labels.get("host", ""), int(value)) for labels, value in
                         metric_samples(registry, "aigw_proxy_shadow_ai_connects_total") if value),
                        key=lambda kv: -kv[1])[:20]
    return console.render(request, viewer, "overview.html", {
        "window": window, "windows": list(WINDOWS), "data": data, "peak": peak, "error": error,
        "by": data.series_by,
        "from": request.query_params.get("from") or (now - timedelta(days=7)).date().isoformat(),
        "to": request.query_params.get("to") or now.date().isoformat(),
        "providers": providers, "reload_at": reload_at, "shadow": shadow,
        "leader_columns": cols.LEADERBOARD_COLUMNS, "metrics": registry is not None,
        "spend_user_columns": cols.SPEND_BY_USER_COLUMNS, "spend_model_columns": cols.SPEND_BY_MODEL_COLUMNS,
    })
