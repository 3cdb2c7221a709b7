"""What the benchmark reads besides its own clock: /proc (CPU, RSS, other load), git, aigw's /healthz and its
database; and the percentile used by the load generator and the report."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _ticks_cpu_s(stat: str) -> float:
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sched_cpu_s(task_dir: Path) -> float:
    """A thread's CPU time in nanoseconds from the scheduler (/proc/…/schedstat), instead of 10 ms clock ticks."""
    return int((task_dir / "schedstat").read_text().split()[0]) / 1e9


def proc_cpu_s(pid: int, stat: str | None = None) -> float:
    """A process's CPU-seconds, all threads. Summed from the scheduler's per-thread nanosecond counters while the
    process lives (a thread that has exited meanwhile is lost: the proxies' threads are long-lived), else its
    clock ticks."""
    if stat is None:
        try:
            total = 0.0
            for task in Path(f"/proc/{pid}/task").iterdir():
                try:
                    total += _sched_cpu_s(task)
                except (OSError, ValueError, IndexError):
                    pass
            if total:
                return total
        except OSError:
            pass
    return _ticks_cpu_s(stat or f"/proc/{pid}/stat")


def child_pids(pid: int) -> list[int]:
    """A process's children (Linux /proc/PID/task/TID/children), e.g. a `--workers` supervisor's workers."""
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                out += [int(x) for x in (task / "children").read_text().split()]
            except (OSError, ValueError):
                pass
    except OSError:
        pass
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU-seconds of a process and all its descendants alive now (a supervisor and its worker processes)."""
    return proc_cpu_s(pid) + sum(tree_cpu_s(child) for child in child_pids(pid))


def proc_main_thread_cpu_s(pid: int) -> float:
    """CPU of the main thread (the event loop) alone; the rest of proc_cpu_s is other threads (aiosqlite, …)."""
    try:
        return _sched_cpu_s(Path(f"/proc/{pid}/task/{pid}"))
    except (OSError, ValueError, IndexError):
        try:
            return _ticks_cpu_s(f"/proc/{pid}/task/{pid}/stat")
        except OSError:
            return 0.0


def machine_busy_s() -> float:
    """CPU-seconds all cores spent busy since boot (/proc/stat), to tell how much other load ran meanwhile."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)) / os.sysconf("SC_CLK_TCK")


def git_state() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.splitlines()
        return f"{head}" + (f" + {len(dirty)} modified file(s)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def http_get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def db_counts(path: Path) -> dict[str, int]:
    from aigw_proxy.storage.schema.tables import interceptions, token_usages, user_prompts

    ix = interceptions.name
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        q = {
            "interceptions": f"SELECT count(*) FROM {ix}",
            "completed": f"SELECT count(*) FROM {ix} WHERE status = 'completed' AND ended_at IS NOT NULL",
            "token_usages": f"SELECT count(*) FROM {token_usages.name}",
            "user_prompts": f"SELECT count(*) FROM {user_prompts.name}",
        }
        return {k: con.execute(sql).fetchone()[0] for k, sql in q.items()}
    finally:
        con.close()
