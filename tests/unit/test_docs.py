"""The repository cites only documents it contains: every `docs/….md#section` named in a tracked file exists, every
relative link in its Markdown resolves, and nothing points at reference notes kept outside the repository."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()

# Every Markdown file a line names must be one the repository holds, except names that are not documents we
# cite: the files agents read from a workspace and the license file npm packages point at.
MD_NAME = re.compile(r"(?<![\w.-])((?:[\w.-]+/)*[\w-]+\.md)\b")
NOT_CITATIONS = frozenset({"AGENTS.md", "CLAUDE.md", "LICENSE.md"})
OUTSIDE_PATTERNS = (re.compile(r"\bshared/(?:reference|seeds)\b"), re.compile(r"\bcontract\s*§", re.IGNORECASE))
# A relative path climbing out of the repository (`../somewhere`), unless what it then names is one of the
# repository's own top-level entries (a link made inside a build tree, like the Makefile's typecheck links).
CLIMB_OUT = re.compile(r"(?<![\w./])(?:\.\./)+([\w-][\w.-]*)")

DOCS_CITATION = re.compile(r"(?<![\w./-])(docs/[\w./-]*?\.md)(?:#([\w-]+))?")
MD_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")


@cache
def tracked_files() -> tuple[str, ...]:
    try:
        # Tracked files and new ones not yet added (ignored files are left out).
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # not a checkout: walk the tree instead
        names = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
                 if p.is_file() and not any(part.startswith(".") or part in ("__pycache__", "build")
                                            for part in p.relative_to(ROOT).parts)]
    return tuple(sorted(n for n in names if (ROOT / n).is_file()))


@cache
def text_of(name: str) -> str | None:
    try:
        return (ROOT / name).read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower-case, punctuation dropped (word characters, `-` and spaces kept),
    spaces turned into `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@cache
def anchors(name: str) -> frozenset[str]:
    """The section anchors of a Markdown file, duplicates numbered as GitHub does (`x`, `x-1`, `x-2`)."""
    text = text_of(name)
    if text is None:
        return frozenset()
    seen: dict[str, int] = {}
    out: set[str] = set()
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m is None:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def check_target(source: str, path: str, anchor: str | None) -> str | None:
    """A problem with a reference to `path#anchor` (repository-relative), or None."""
    target = ROOT / path
    if not target.exists():
        return f"{source}: {path} does not exist"
    if anchor and path.endswith(".md") and anchor.lower() not in anchors(path):
        return f"{source}: {path} has no section #{anchor}"
    return None


def docs_citations() -> list[tuple[str, str, str | None]]:
    """(file:line, docs path, anchor) for every `docs/….md` named in a tracked file."""
    found = []
    for name in tracked_files():
        text = text_of(name)
        if text is None or name == THIS:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for m in DOCS_CITATION.finditer(line):
                found.append((f"{name}:{lineno}", m.group(1), m.group(2)))
    return found


def test_the_code_cites_the_docs_pages() -> None:
    cited = {path for _, path, _ in docs_citations()}
    assert {"docs/compatibility.md", "docs/agent-traffic.md"} <= cited
    assert all(anchors(path) for path in cited if (ROOT / path).exists())


def test_every_cited_docs_page_and_section_exists() -> None:
    problems = [p for where, path, anchor in docs_citations() if (p := check_target(where, path, anchor))]
    assert problems == [], "\n".join(problems)


def test_every_relative_markdown_link_resolves() -> None:
    problems = []
    for name in tracked_files():
        text = text_of(name)
        if not name.endswith(".md") or text is None:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for m in MD_LINK.finditer(line):
                link = m.group(1)
                if re.match(r"[a-z][a-z0-9+.-]*:", link, re.IGNORECASE):  # http:, https:, mailto:, …
                    continue
                path, _, anchor = link.partition("#")
                target = (Path(name).parent / path).as_posix() if path else name
                resolved = (ROOT / target).resolve()
                if not resolved.is_relative_to(ROOT):
                    problems.append(f"{name}:{lineno}: {link} points outside the repository")
                elif problem := check_target(f"{name}:{lineno}", resolved.relative_to(ROOT).as_posix(),
                                             anchor or None):
                    problems.append(problem)
    assert problems == [], "\n".join(problems)


def test_nothing_cites_documents_outside_the_repository() -> None:
    problems = []
    for name in tracked_files():
        text = text_of(name)
        if text is None or name == THIS:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            problems += [f"{name}:{lineno}: cites {hit!r}" for hit in outside_citations(line)]
    assert problems == [], "\n".join(problems)


def outside_citations(line: str) -> list[str]:
    """The documents a line cites that the repository does not hold."""
    held = {n.rsplit("/", 1)[-1] for n in tracked_files() if n.endswith(".md")}
    hits = [m.group(1) for m in MD_NAME.finditer(line)
            if m.group(1).rsplit("/", 1)[-1] not in held | NOT_CITATIONS]
    top_level = {n.split("/", 1)[0] for n in tracked_files()}
    hits += [m.group(0) for m in CLIMB_OUT.finditer(line) if m.group(1) not in top_level]
    return hits + [m.group(0) for p in OUTSIDE_PATTERNS if (m := p.search(line))]


def test_a_citation_of_a_document_the_repository_lacks_is_found() -> None:
    assert outside_citations("see notes/never-written-here.md for why") == ["notes/never-written-here.md"]
    assert outside_citations("as docs/compatibility.md#clients says") == []
    assert outside_citations("the rules in ../elsewhere/notes") == ["../elsewhere"]
    assert outside_citations("ln -s ../../../addons build/typecheck/aigw_proxy/addons") == []


def test_slugs_follow_github() -> None:
    assert slug("Search query grammar") == "search-query-grammar"
    assert slug("The `q` grammar: keys, quotes & times") == "the-q-grammar-keys-quotes--times"
    assert slug("Proxy and trust settings") == "proxy-and-trust-settings"
