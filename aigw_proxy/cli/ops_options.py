"""`aigw-proxy run` options for metrics and circuit breaking, folded into two Settings values."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from aigw_proxy.config.durations import parse_duration
from aigw_proxy.policy.circuit import BreakerConfig


class Duration(click.ParamType):
    """Seconds as a number (`30`, `0.5`) or a Go-style duration (`30s`, `500ms`, `1m30s`), as Coder's flags take."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a duration (e.g. 30, 30s, 500ms, 1m30s)", param, ctx)


_OPTIONS = [
    # Two options for one setting: `--metrics-initiator-label=false` (as Coder documents it) needs an option that
    # takes an optional value, and click's `--x/--no-x` flag pair refuses a value.
    click.option("--metrics-initiator-label", "metrics_initiator_label", type=click.BOOL, is_flag=False,
                 flag_value=True, default=True, show_default=True, envvar="AIGW_METRICS_INITIATOR_LABEL",
                 help="Label per-user metrics with initiator_id; false drops the label (large fleets)."),
    click.option("--no-metrics-initiator-label", "no_metrics_initiator_label", is_flag=True,
                 help="Same as --metrics-initiator-label=false."),
    click.option("--circuit-breaker-enabled", envvar="AIGW_CIRCUIT_BREAKER_ENABLED", type=click.BOOL,
                 is_flag=False, flag_value=True, default=False, show_default=True,
                 help="Circuit breakers per provider, endpoint and model."),
    click.option("--circuit-breaker-failure-threshold", envvar="AIGW_CIRCUIT_BREAKER_FAILURE_THRESHOLD",
                 type=click.IntRange(1), default=5, show_default=True,
                 help="Consecutive failures (429, 503, 504; Anthropic 529) that open a breaker."),
    click.option("--circuit-breaker-interval", envvar="AIGW_CIRCUIT_BREAKER_INTERVAL", type=Duration(),
                 default="10s", show_default=True, help="How often a closed breaker's counts reset (0: never)."),
    click.option("--circuit-breaker-timeout", envvar="AIGW_CIRCUIT_BREAKER_TIMEOUT", type=Duration(),
                 default="30s", show_default=True, help="How long a breaker stays open before trying again."),
    click.option("--circuit-breaker-max-requests", envvar="AIGW_CIRCUIT_BREAKER_MAX_REQUESTS",
                 type=click.IntRange(1), default=3, show_default=True,
                 help="Requests let through while half-open; this many successes close the breaker."),
]


def ops_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options to a command (put it right above the function) and hand the function
    `metrics_initiator_label: bool` and `circuit_breaker: BreakerConfig` instead of the raw values."""

    @functools.wraps(f)
    def command(*args: Any, **kw: Any) -> Any:
        label, no_label = kw.pop("metrics_initiator_label"), kw.pop("no_metrics_initiator_label")
        label = label and not no_label
        timeout = kw.pop("circuit_breaker_timeout")
        interval = kw.pop("circuit_breaker_interval")
        if timeout <= 0 or interval < 0:
            raise click.BadParameter("--circuit-breaker-timeout must be > 0 and --circuit-breaker-interval >= 0")
        breaker = BreakerConfig(
            enabled=kw.pop("circuit_breaker_enabled"),
            failure_threshold=kw.pop("circuit_breaker_failure_threshold"),
            interval=interval,
            timeout=timeout,
            max_requests=kw.pop("circuit_breaker_max_requests"),
        )
        return f(*args, metrics_initiator_label=label, circuit_breaker=breaker, **kw)

    for option in reversed(_OPTIONS):
        command = option(command)
    return command
