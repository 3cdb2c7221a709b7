"""Fixtures for the real-agent tests: the agents installed by scripts/ensure-agents.sh, one stand-in upstream for
every host they call, a real `aigw-proxy run` in front of it, and per-agent homes.

A missing agent (no npm, or `make test` not run) skips its tests with a loud message; with CI=true it fails.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.agent_standin import AgentStandIn, DirectRelay
from tests.support.agents import AgentHome, Route, agent_binary, agents_dir
from tests.support.daemon import Daemon, provider_config, start_daemon, stop_daemon

TIMINGS: dict[str, dict[str, list[float]]] = {}  # agent -> {"proxy": [s, ...], "direct": [...]}, printed at the end
MISSING: set[str] = set()


def require_agent(name: str) -> Path:
    path = agent_binary(name)
    if path is not None:
        return path
    why = (f"the real agent `{name}` is not installed in {agents_dir()} — run `make test` (it runs "
           "scripts/ensure-agents.sh, which needs npm)")
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    MISSING.add(name)
    pytest.skip(why)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_agent(name): the test runs this real agent (skipped or, in CI, failed "
                                       "before any fixture starts when it is not installed)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("real_agent"):
        require_agent(mark.args[0])


@pytest.fixture(scope="module")
def agent_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStandIn]:
    s = AgentStandIn(tmp_path_factory.mktemp("agent-standin")).start()
    yield s
    s.stop()


@pytest.fixture
def standin(agent_standin: AgentStandIn) -> Iterator[AgentStandIn]:
    agent_standin.reset()
    yield agent_standin
    agent_standin.reset()


@pytest.fixture(scope="module")
def agent_daemon(tmp_path_factory: pytest.TempPathFactory, agent_standin: AgentStandIn) -> Iterator[Daemon]:
    # api.github.com is not a provider: a real deployment tunnels it to GitHub. The tests cannot reach GitHub, so
    # this config decrypts it towards the stand-in too (relayed unrecorded, as every non-model path is).
    github = ('[[providers]]\nname = "github"\ntype = "copilot"\nhosts = ["api.github.com"]\n'
              f'upstream = "{agent_standin.url}"\n')
    cfg = provider_config(agent_standin, agent_standin.ca_file) + "\n" + github
    d = start_daemon(tmp_path_factory.mktemp("agent-daemon"), cfg)
    yield d
    stop_daemon(d)


@pytest.fixture
def proxied(agent_daemon: Daemon) -> Route:
    """Through aigw-proxy, as users run it: the user's proxy token in HTTPS_PROXY, the proxy's CA trusted."""
    return Route(agent_daemon.proxy_url("alice"), agent_daemon.ca_bundle)


@pytest.fixture(scope="module")
def direct_relay(agent_standin: AgentStandIn) -> Iterator[DirectRelay]:
    r = DirectRelay(agent_standin).start()
    yield r
    r.stop()


@pytest.fixture
def direct(direct_relay: DirectRelay, agent_standin: AgentStandIn) -> Route:
    """Without aigw-proxy: tunnels piped straight to the stand-in, whose own CA the agent trusts."""
    return Route(direct_relay.url, agent_standin.ca_file)


@pytest.fixture
def new_home(tmp_path: Path) -> Iterator[object]:
    """`new_home(route, name="a")`: a fresh HOME + workspace for one agent session."""

    def make(route: Route, name: str = "session") -> AgentHome:
        return AgentHome(tmp_path / name, route)

    yield make


def compare_wall_time(agent: str, session: Callable[[Route, str], float], proxied: Route, direct: Route,
                      rounds: int = 2) -> None:
    """Run the same session (`session(route, name)` -> seconds, a fresh HOME each) direct and through the proxy,
    alternating, `rounds` times each: printed at the end of the run (benchmark figures, not asserts). The agent
    has already run in this module, so its binary is in the page cache for both."""
    for i in range(rounds):
        for mode, route in (("direct", direct), ("proxy", proxied)):
            TIMINGS.setdefault(agent, {}).setdefault(mode, []).append(session(route, f"timing-{mode}-{i}"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("real agents: wall time of one session, through aigw-proxy vs direct (min / median)")
        for agent, t in sorted(TIMINGS.items()):
            proxy, direct = t.get("proxy", []), t.get("direct", [])
            if not proxy or not direct:
                continue
            terminalreporter.write_line(
                f"  {agent:9} proxy {min(proxy):6.2f} / {statistics.median(proxy):6.2f} s   "
                f"direct {min(direct):6.2f} / {statistics.median(direct):6.2f} s   "
                f"ratio of minima {min(proxy) / min(direct):.2f}x")
    if MISSING:
        terminalreporter.section("REAL AGENT TESTS SKIPPED", sep="!", red=True, bold=True)
        terminalreporter.write_line(
            f"  not installed: {', '.join(sorted(MISSING))} (in {agents_dir()}). Run `make test`, which installs "
            "them with scripts/ensure-agents.sh (needs npm). In CI (CI=true) this is a failure.", red=True)
