"""What the user typed, and what the agent injected around it: the one place that knows each agent's wrappers.

Coding agents put context into the user's turn next to the typed text, so "the newest user text" is not the
prompt. What each agent is seen to inject (docs/agent-traffic.md#injected-context):

- Claude Code: `<system-reminder>…</system-reminder>` text blocks first (CLAUDE.md, date, todo state, IDE selection
  as `<ide_selection>` / `<ide_opened_file>`), the typed prompt as the last block of the user message.
- Codex: a user message `# AGENTS.md instructions for <dir>` (with `<INSTRUCTIONS>…`) and one of
  `<environment_context>…</environment_context>` (older releases: `<user_instructions>`) before the user message
  that holds the typed prompt.
- Gemini CLI: the user turn's parts start with a `<session_context>…</session_context>` part; the typed text is the
  next part, and @-referenced file contents follow as further parts.
- GitHub Copilot CLI: `<current_datetime>…</current_datetime>\\n\\n` in front of the typed text, in the same part.
- OpenCode: the text as typed.

A wrapper is context wherever it stands at the start or the end of a text part; a part that is nothing but
wrappers is no prompt. Text that merely mentions a tag, or opens one without closing it, is kept as typed. The
rules hold for every request, whichever client sent it (the parsers do not know the client, and typed text does
not begin or end with one of these closed tags). Which of several typed parts is the prompt follows the agents'
layouts (`typed_prompt`). Pure; never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Wrappers:
    """One agent's injected context: `<tag>…</tag>` blocks, and parts that begin with a heading."""

    agent: str
    tags: tuple[str, ...]
    headings: tuple[str, ...] = ()


AGENTS: tuple[Wrappers, ...] = (
    Wrappers("Claude Code", ("system-reminder", "ide_selection", "ide_opened_file")),
    Wrappers("Codex", ("environment_context", "user_instructions", "user-instructions", "INSTRUCTIONS"),
             headings=("# AGENTS.md instructions for ",)),
    Wrappers("Gemini CLI", ("session_context",)),
    Wrappers("GitHub Copilot (CLI)", ("current_datetime",)),
)

_TAGS = tuple(dict.fromkeys(tag for w in AGENTS for tag in w.tags))
_HEADINGS = tuple(h for w in AGENTS for h in w.headings)
_MAX_ATTRIBUTES = 256  # attributes on a wrapper's opening tag, `<system-reminder kind="x">`: a bounded search
# An opening wrapper tag at the very start (after blanks).
_OPENING = re.compile(rf"\s*<({'|'.join(map(re.escape, _TAGS))})(?:\s[^<>]{{0,{_MAX_ATTRIBUTES}}})?>")

Pick = Literal["first", "last", "all"]


def typed_text(value: Any) -> str | None:
    """The typed text of one text part with the wrappers around it removed; None if nothing typed remains.

    A part without wrappers is returned exactly as sent."""
    if not isinstance(value, str) or not value.strip():
        return None
    if value.lstrip().startswith(_HEADINGS):
        return None
    text = _strip_trailing(_strip_leading(value))
    if not text.strip():
        return None
    return text


def typed_prompt(parts: Iterable[Any], pick: Pick) -> str | None:
    """The prompt among the text parts of the newest user turn, in order.

    `pick` follows where the agents put the typed text once context parts are left out: `"last"` for Anthropic
    Messages and Chat Completions (Claude Code: reminders first, the prompt last), `"first"` for Gemini (Gemini CLI
    appends @-file contents after the prompt), `"all"` joined by newlines for Responses (every `input_text` of the
    newest user message is typed)."""
    typed = [t for t in map(typed_text, parts) if t is not None]
    if not typed:
        return None
    if pick == "first":
        return typed[0]
    if pick == "last":
        return typed[-1]
    return "\n".join(typed)


def _strip_leading(text: str) -> str:
    """Remove wrapper blocks from the start of `text` (and the blanks after each)."""
    stripped = False
    while (m := _OPENING.match(text)) is not None:
        close = f"</{m.group(1)}>"
        end = text.find(close, m.end())
        if end < 0:  # never closed: not a wrapper, the text stays as it is
            break
        text = text[end + len(close):]
        stripped = True
    return text.lstrip() if stripped else text


def _strip_trailing(text: str) -> str:
    """Remove wrapper blocks from the end of `text` (and the blanks before each)."""
    stripped = False
    while True:
        body = text.rstrip()
        tag = next((t for t in _TAGS if body.endswith(f"</{t}>")), None)
        start = _last_opening(body, tag) if tag else None
        if start is None:
            return text.rstrip() if stripped else text
        text, stripped = body[:start], True


def _last_opening(text: str, tag: str) -> int | None:
    """Where the last `<tag>` (or `<tag attrs>`) opens before the closing tag that ends `text`."""
    limit = len(text) - len(tag) - 3
    while (i := text.rfind(f"<{tag}", 0, limit)) >= 0:
        after = i + len(tag) + 1
        if text[after] == ">":
            return i
        if text[after].isspace():
            gt = text.find(">", after, min(limit, after + _MAX_ATTRIBUTES + 1))
            if gt >= 0 and "<" not in text[after:gt]:
                return i
        limit = i
    return None
