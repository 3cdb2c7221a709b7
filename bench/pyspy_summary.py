"""Summarise py-spy raw profiles written by `proxy_bench.py --py-spy DIR`: where the event-loop thread's time goes.

    .venv/bin/python bench/pyspy_summary.py DIR/aigw-json-rep1.txt=1.27 DIR/mitm-min-json-rep1.txt=0.82

Each sample of the main thread is charged to the outermost aigw frame on its stack (grouped by file), else to
mitmproxy's hook dispatch, else to the relay itself. With `=MS` (the event-loop CPU ms/request the benchmark
printed), shares are scaled to ms/request so profiles of different proxies can be compared side by side.
Note: py-spy attributes garbage-collection pauses to whichever frame allocated, mostly the relay.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

_FRAME = re.compile(r"^(.*) \((.*):(\d+)\)$")
_NOT_WORK = ("aigw_proxy/cli", "aigw_proxy/__main__", "aigw_proxy/proxy/daemon", "aigw_proxy/aio.py")  # the runner


def _component(stack: list[str]) -> str:
    frames = [m.groups()[:2] if (m := _FRAME.match(f)) else (f, "") for f in stack]
    if frames and frames[-1][0] == "EpollSelector.select":
        return "idle (epoll)"
    if frames and frames[-1][1].endswith("asyncio/runners.py"):  # no Python frame below the runner
        return "uvloop's own C code (polling, socket reads and writes, callbacks)"
    for _name, file in frames:
        if file.startswith(("addons/", "aigw_proxy/")) and not file.startswith(_NOT_WORK):
            if file.startswith("aigw_proxy/storage/"):
                return "aigw recorder on the loop (storage/*, SQLAlchemy, aiosqlite)"
            return f"aigw {file}"
    names = {name for name, _file in frames}
    if names & {"AddonManager.invoke_addon", "AddonManager.handle_lifecycle"}:
        return "mitmproxy hook dispatch"
    return "mitmproxy relay (layers, TLS, asyncio, sockets)"


def summarise(path: str) -> Counter[str]:
    out: Counter[str] = Counter()
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            if len(frames) < 2 or "MainThread" not in frames[0] or not n.isdigit():
                continue
            out[_component(frames[1:])] += int(n)
    return out


def main(args: list[str]) -> int:
    if not args:
        print(__doc__)
        return 2
    cols: list[tuple[str, dict[str, float]]] = []
    for arg in args:
        path, _, ms = arg.partition("=")
        c = summarise(path)
        total = sum(c.values()) or 1
        scale = float(ms) if ms else 100.0
        cols.append((path.rsplit("/", 1)[-1].removesuffix(".txt"), {k: v / total * scale for k, v in c.items()}))
    unit = "ms/request" if all("=" in a for a in args) else "% of main-thread samples"
    keys = sorted({k for _, c in cols for k in c}, key=lambda k: -max(c.get(k, 0.0) for _, c in cols))
    print(f"{'event-loop thread, ' + unit:64}" + "".join(f"{name[:20]:>22}" for name, _ in cols))
    for k in keys:
        print(f"{k[:64]:64}" + "".join(f"{c.get(k, 0.0):22.3f}" for _, c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
