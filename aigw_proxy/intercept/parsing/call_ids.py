"""Tool-call ids: the one rule under which a response's tool call and the later request answering it meet.

The writer links a request that returns a tool result to the interception whose response made the call by an
exact match of the request's correlating id with a recorded tool call id
(docs/compatibility.md#threads-and-sessions). Both sides go through `call_key`, so they arrive at the same key
whatever form the agent sends or invents (docs/agent-traffic.md#gemini-cli):

- Anthropic Messages: `tool_use.id` (`toolu_…`; `srvtoolu_…`, `toolu_bdrk_…`) ↔ `tool_result.tool_use_id`.
- OpenAI Chat Completions: `tool_calls[].id` (`call_…`) ↔ a `tool` message's `tool_call_id`.
- OpenAI Responses: `function_call.call_id` / `custom_tool_call.call_id` (`call_…`) ↔ the `*_call_output`'s
  `call_id`. The item's own id (`fc_…`, `ctc_…`) is recorded as the item id; no output names it.
- Gemini, when the model sent `functionCall.id`: the id ↔ `functionResponse.id`. Newer Gemini CLI releases answer
  with `<name>__<id>`: the prefix is the CLI's, the key is the model's id.
- Gemini, when the model sent no id (Gemini 2.x models): the function name, the one thing every answer carries.
  Gemini CLI answers with an id it invented — `<name>_<ms>_<n>` (0.61: `run_shell_command_1796113769368_0`),
  `<name>-<ms>-<hex>` in older releases, `<name>__<name>_<ms>_<n>` or `<name>__synth_<prompt id>_<ms>_<n>` in
  newer ones — and other clients with the name alone: all of them key on the name.

Pure: no I/O, never raises.
"""

from __future__ import annotations

from typing import Any

_HEX = frozenset("0123456789abcdef")


def call_key(call_id: Any, name: Any = None) -> str | None:
    """The key of one tool call, the same from the response that made it and the request that answers it.

    `call_id` is the id as sent (on either side); `name` is the function name, given only for APIs whose answers
    carry it (Gemini). None when there is neither.
    """
    cid, fn = _clean(call_id), _clean(name)
    if fn is None:
        return cid
    if cid is None:
        return fn
    own = cid.removeprefix(f"{fn}__") or cid  # newer Gemini CLI: `<name>__<id it would have used>`
    if _invented(own, fn):
        return fn
    return own


def _invented(call_id: str, name: str) -> bool:
    """Whether `call_id` is one Gemini CLI made up for an id-less call of `name` (string tests, no regex: ids are
    untrusted and can be long)."""
    if call_id.startswith("synth_"):  # synth_<prompt id>_<ms>_<n>
        fields = call_id.rsplit("_", 2)
        return len(fields) == 3 and _digits(fields[1]) and _digits(fields[2])
    rest = call_id.removeprefix(name)
    if rest == call_id or not rest:
        return False
    sep, fields = rest[0], rest[1:].split(rest[0])
    if sep == "_" and len(fields) == 2:  # <name>_<ms>_<n>
        return _digits(fields[0]) and _digits(fields[1])
    if sep == "-" and len(fields) == 2:  # <name>-<ms>-<hex>
        return _digits(fields[0]) and bool(fields[1]) and set(fields[1]) <= _HEX
    return False


def _digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def _clean(value: Any) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None
