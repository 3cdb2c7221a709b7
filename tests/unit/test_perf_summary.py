"""bench/perf_summary.py: a perf profile's self time charged to the right component.

The parser is checked on `perf report` output as perf 6 prints it; the end-to-end test records a real Python
process that spends its time hashing (OpenSSL) and building objects (the interpreter) and checks both show.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import perf_summary

# Abridged from `perf report --stdio --no-children --sort dso,sym -g none -t TAB` on an aigw-proxy profile.
REPORT = """\
# To display the perf.data header info, please use --header/--header-only options.
#
# Samples: 2K of event 'cpu-clock:ppp'
#
# Overhead\tShared Object\tSymbol
#
 22.48% \tlibpython3.13.so.1.0                         \t[.] _PyEval_EvalFrameDefault
 4.53%  \t[kernel.kallsyms]                            \t[k] _raw_spin_unlock_irqrestore
 2.00%  \tlibpython3.13.so.1.0                         \t[.] gc_collect_main
 1.39%  \tlibpython3.13.so.1.0                         \t[.] visit_decref
 0.68%  \t_rust.abi3.so                                \t[.] sha512_block_data_order_avx2
 0.63%  \tlibsqlite3.so.0.8.6                          \t[.] sqlite3VdbeExec
 0.50%  \t_cffi_backend.cpython-313-x86_64-linux-gnu.so\t[.] 0x000000000001a2b3
 0.41%  \tloop.cpython-313-x86_64-linux-gnu.so         \t[.] __pyx_f_6uvloop_4loop_6Handle__run
 0.36%  \tlibc.so.6                                    \t[.] __memmove_avx512_unaligned_erms
 0.20%  \t_json.cpython-313-x86_64-linux-gnu.so        \t[.] scanstring_unicode
"""


def test_a_report_is_charged_by_component() -> None:
    shares = perf_summary.parse_report(REPORT)
    assert shares[perf_summary.PYTHON] == pytest.approx(22.48)
    assert shares[perf_summary.GC] == pytest.approx(2.00 + 1.39)  # the collector apart from the interpreter
    assert shares[perf_summary.KERNEL] == pytest.approx(4.53)
    assert shares[perf_summary.TLS] == pytest.approx(0.68 + 0.50)  # OpenSSL and pyOpenSSL's cffi glue
    assert shares[perf_summary.SQLITE] == pytest.approx(0.63)
    assert shares[perf_summary.LOOP] == pytest.approx(0.41)
    assert shares[perf_summary.LIBC] == pytest.approx(0.36)
    assert shares[perf_summary.OTHER] == pytest.approx(0.20)
    assert sum(shares.values()) == pytest.approx(33.18)


def test_the_table_lists_each_profile_as_a_column() -> None:
    lines = perf_summary.table({"aigw": {perf_summary.PYTHON: 55.8, perf_summary.TLS: 10.6},
                                "mitm-min": {perf_summary.PYTHON: 58.1}})
    assert lines[0].split() == ["aigw", "mitm-min"]
    rows = {}
    for line in lines[1:]:
        comp = next(c for c in perf_summary.COMPONENTS if line.strip().startswith(c))
        rows[comp] = line.strip().removeprefix(comp).split()
    assert rows == {perf_summary.PYTHON: ["55.8%", "58.1%"], perf_summary.TLS: ["10.6%", "0.0%"]}


def test_a_real_profile_shows_the_interpreter_and_openssl(tmp_path: Path) -> None:
    problem = perf_summary.perf_problem(tmp_path)
    if problem:
        pytest.skip(problem)
    busy = ("import hashlib, time\n"
            "end = time.monotonic() + 1.5\n"
            "while time.monotonic() < end:\n"
            "    hashlib.sha256(b'x' * 65536).digest()\n"
            "    [{'k': i} for i in range(2000)]\n")
    out = tmp_path / "busy.data"
    subprocess.run(["perf", "record", "-q", "-F", "999", "-o", str(out), "--", sys.executable, "-c", busy],
                   check=True, capture_output=True, timeout=60)
    shares = perf_summary.summarise(out)
    assert shares.get(perf_summary.PYTHON, 0.0) > 10
    assert shares.get(perf_summary.TLS, 0.0) > 5  # hashlib: OpenSSL's libcrypto
    assert sum(shares.values()) == pytest.approx(100, abs=1)
