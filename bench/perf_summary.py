"""Summarise Linux perf profiles written by `proxy_bench.py --perf DIR`: where a proxy's CPU goes, natively.

    .venv/bin/python bench/perf_summary.py DIR/aigw-newconn-rep1.data DIR/mitm-min-newconn-rep1.data

py-spy (`--py-spy`) sees Python frames only; perf samples every CPU cycle the process spends, in any thread, in
user space and in the kernel, so it answers what py-spy cannot: how much of a new connection is the TLS
handshake's cryptography, the kernel's sockets and thread wake-ups, the garbage collector, or Python itself.
Self time is charged by shared object (and, inside the interpreter, the collector's symbols) to a component.
Needs `perf` (Debian: linux-perf) and, for a non-root user, kernel.perf_event_paranoid <= 1.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

PYTHON = "Python interpreter (mitmproxy, aigw, asyncio code)"
GC = "Python garbage collector"
TLS = "TLS and X.509 (OpenSSL, cryptography, cffi)"
KERNEL = "kernel (sockets, scheduling, wake-ups)"
LOOP = "event loop's C code (uvloop, _asyncio)"
SQLITE = "SQLite"
LIBC = "libc and loader (malloc, memcpy, TLS slots)"
OTHER = "other native code"
COMPONENTS = (PYTHON, GC, TLS, KERNEL, LOOP, SQLITE, LIBC, OTHER)
Shares = dict[str, float]  # component -> percent of the process's samples

# CPython's cyclic collector (Modules/gcmodule.c, Python/gc.c): its gc_* and _PyGC_* functions and the helpers
# and traversal callbacks of a collection.
_GC_SYMBOLS = ("gc_", "_PyGC_", "visit_decref", "visit_reachable", "visit_move", "move_unreachable",
               "subtract_refs", "update_refs", "deduce_unreachable", "move_legacy_finalizers", "handle_weakrefs")
_DSO_COMPONENTS = (
    (("_rust.abi3", "libssl", "libcrypto", "_cffi_backend", "_openssl"), TLS),
    (("[kernel", "[vdso]"), KERNEL),
    (("uvloop", "loop.cpython", "_asyncio"), LOOP),
    (("sqlite3",), SQLITE),
    (("libc.so", "libc-", "ld-linux", "libm.so", "libpthread"), LIBC),
)


def perf_problem(out_dir: Path) -> str | None:
    """Why `perf record` cannot profile here (not installed, not permitted), or None; creates out_dir."""
    if shutil.which("perf") is None:
        return "Linux perf is not installed (Debian: apt-get install linux-perf)"
    out_dir.mkdir(parents=True, exist_ok=True)
    probe = out_dir / ".probe.data"
    try:
        done = subprocess.run(["perf", "record", "-q", "-o", str(probe), "--", "true"], capture_output=True,
                              text=True, timeout=60)
    finally:
        probe.unlink(missing_ok=True)
    if done.returncode != 0:
        return (f"perf record failed ({done.stderr.strip()[:200]}); as a non-root user, "
                "`sysctl kernel.perf_event_paranoid=1` allows it")
    return None


def component(dso: str, symbol: str) -> str:
    """The component one sample's shared object and symbol belong to."""
    if "libpython" in dso or dso.startswith("python"):
        return GC if symbol.startswith(_GC_SYMBOLS) else PYTHON
    for prefixes, name in _DSO_COMPONENTS:
        if any(p in dso for p in prefixes):
            return name
    return OTHER


def parse_report(text: str) -> Shares:
    """Shares (percent of samples) by component, from `perf report --sort dso,sym -t TAB` output."""
    out: defaultdict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) < 3 or not fields[0].endswith("%"):
            continue
        symbol = fields[2].split("] ", 1)[-1]
        out[component(fields[1], symbol)] += float(fields[0].rstrip("%"))
    return dict(out)


def summarise(path: Path) -> Shares:
    """Shares by component of one `perf record` file."""
    done = subprocess.run(["perf", "report", "-i", str(path), "--stdio", "--no-children", "--sort", "dso,sym",
                           "-g", "none", "-t", "\t"], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"perf report {path}: {done.stderr.strip()[:300]}")
    return parse_report(done.stdout)


def table(profiles: dict[str, Shares]) -> list[str]:
    """Columns = profiles (already merged per proxy), rows = components, cells = percent of the proxy's CPU."""
    names = list(profiles)
    width = max(len(c) for c in COMPONENTS) + 1
    cols = [max(12, len(n) + 2) for n in names]
    lines = [f"  {'':{width}}" + "".join(f"{n:>{w}}" for n, w in zip(names, cols, strict=True))]
    for comp in COMPONENTS:
        if not any(profiles[n].get(comp, 0.0) >= 0.05 for n in names):
            continue
        lines.append(f"  {comp:{width}}" + "".join(f"{profiles[n].get(comp, 0.0):{w - 1}.1f}%"
                                                    for n, w in zip(names, cols, strict=True)))
    return lines


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    profiles = {Path(a).stem: summarise(Path(a)) for a in argv}
    print("\n".join(table(profiles)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
