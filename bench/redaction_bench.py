"""How long redaction takes per recorded field: the engine on 4 KiB, 64 KiB and 256 KiB (the default field cap)
of source code, of prose and of text full of secrets, against detect-secrets' own line-by-line scan of the same
256 KiB of code.

    .venv/bin/python bench/redaction_bench.py [--no-baseline]
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import timeit
from collections.abc import Callable

from aigw_proxy.redaction.engine import Redactor
from aigw_proxy.redaction.records import DEFAULT_MAX_FIELD_BYTES

SIZES = (4 * 1024, 64 * 1024, DEFAULT_MAX_FIELD_BYTES)


def source_code(size: int) -> str:
    """Real Python source (the standard library's), as an agent would paste or write it."""
    import asyncio
    import email
    import http.client
    import json as json_module
    import logging
    import tarfile
    import urllib.request
    import zipfile

    text = ""
    for module in (urllib.request, http.client, logging, tarfile, zipfile, email, asyncio, json_module):
        for name in dir(module):
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                try:
                    text += inspect.getsource(obj)
                except (OSError, TypeError):
                    continue
                if len(text) >= size:
                    return text[:size]
    return (text * (size // max(len(text), 1) + 1))[:size]


def prose(size: int) -> str:
    line = ("The model explains why the retry loop never ends: the backoff is reset on every attempt, so the "
            "client hammers the service. ")
    return (line * (size // len(line) + 1))[:size]


def with_secrets(size: int) -> str:
    chunk = ("export OPENAI_API_KEY=sk-proj-" + "Ab1-Cd2_" * 8 + "\n"
             "aws_access_key_id = AKIAQ7WZ3XK2M5N8P4R6\n"
             'password = "Tr0ub4dor&3"\n'
             "git clone https://deploy:Sup3rS3cret@git.example.com/repo.git\n" + "x = compute(y)\n" * 20)
    return (chunk * (size // len(chunk) + 1))[:size]


def best_ms(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-baseline", action="store_true", help="skip detect-secrets' own scan (~3 s)")
    args = parser.parse_args()
    redactor = Redactor()
    results: dict[str, dict[str, float]] = {}
    for label, make in (("code", source_code), ("prose", prose), ("secrets", with_secrets)):
        for size in SIZES:
            text = make(size)
            ms = best_ms(functools.partial(redactor.redact, text), number=max(1, 65536 // size))
            results.setdefault(label, {})[f"{size // 1024} KiB"] = round(ms, 3)
            print(f"{label:8} {size // 1024:4} KiB: {ms:8.3f} ms  ({size / 1024 / 1024 / ms * 1000:6.1f} MiB/s)")
    if not args.no_baseline:
        from detect_secrets.core.scan import scan_line
        from detect_secrets.settings import default_settings

        lines = source_code(DEFAULT_MAX_FIELD_BYTES).splitlines()
        with default_settings():
            ms = best_ms(lambda: [s for line in lines for s in scan_line(line)], number=1)
        results["detect-secrets scan_line, code"] = {"256 KiB": round(ms, 1)}
        print(f"detect-secrets' own scan_line, 256 KiB of code: {ms:8.1f} ms")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
