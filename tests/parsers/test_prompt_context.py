"""The prompt is the text the user typed: each agent's injected context is left out, whichever API carries it.

One test per agent form (Claude Code, Codex, Gemini CLI, Copilot CLI, OpenCode), each through the parser of every
API that agent uses, plus the rules of `prompt_context` itself."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aigw_proxy.intercept.clients import CLIENTS
from aigw_proxy.intercept.parsing import anthropic_messages, gemini, openai_chat, openai_responses, prompt_context
from aigw_proxy.intercept.parsing.prompt_context import typed_prompt, typed_text

TYPED = "list the files in src and count them"


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def messages_prompt(*texts: str) -> str | None:
    """Anthropic Messages: one user message of text blocks (Claude Code, Copilot CLI on Claude models)."""
    blocks = [{"type": "text", "text": t} for t in texts]
    return anthropic_messages.parse_request(body({"model": "claude-sonnet-4-5", "messages": [
        {"role": "user", "content": blocks}]})).prompt


def chat_prompt(*texts: str) -> str | None:
    """Chat Completions: a user message of text parts (a single text is sent as a string)."""
    content: object = texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts]
    return openai_chat.parse_request(body({"model": "gpt-4.1", "messages": [
        {"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": content}]})).prompt


def responses_prompt(*texts: str) -> str | None:
    """Responses: the newest user message's input_text parts (Codex, Copilot CLI on gpt-5 models)."""
    parts = [{"type": "input_text", "text": t} for t in texts]
    return openai_responses.parse_request(body({"model": "gpt-5-mini", "input": [
        {"type": "message", "role": "user", "content": parts}]})).prompt


def gemini_prompt(*texts: str) -> str | None:
    """Gemini generateContent: the newest user turn's text parts (Gemini CLI)."""
    return gemini.parse_request(body({"contents": [{"role": "user", "parts": [{"text": t} for t in texts]}]})).prompt


# ----------------------------------------------------------------------------------------------------
# Gemini CLI: a <session_context> part first, then the typed text, then any @-file contents

SESSION_CONTEXT = (
    "<session_context>\nThis is the Gemini CLI. We are setting up the context for our chat.\n"
    "Today's date is Tuesday, December 1, 2026 (formatted according to the user's locale).\n"
    "My operating system is: linux\nThe project's temporary directory is: /home/u/.gemini/tmp/repo\n"
    "- **Workspace Directories:**\n  - /home/u/repo\n- **Directory Structure:**\n\n"
    "Showing up to 200 items (files + folders).\n\n/home/u/repo/\n├───README.md\n└───src/\n</session_context>"
)


def test_gemini_cli_prompt_is_the_typed_part_not_its_session_context() -> None:
    assert gemini_prompt(SESSION_CONTEXT, TYPED) == TYPED


def test_gemini_cli_prompt_with_referenced_files_after_the_typed_text() -> None:
    parts = (SESSION_CONTEXT, "explain @src/main.py", "\n--- Content from referenced files ---",
             "\nContent from @src/main.py:\n", "print('hi')", "\n--- End of content ---")
    assert gemini_prompt(*parts) == "explain @src/main.py"


def test_gemini_cli_turn_of_only_session_context_has_no_prompt() -> None:
    assert gemini_prompt(SESSION_CONTEXT) is None


def test_gemini_cli_full_request_records_the_typed_prompt() -> None:
    """The shape Gemini CLI 0.61 sends for `gemini -p`: system instruction, tools, one user turn."""
    req = {
        "contents": [{"role": "user", "parts": [{"text": SESSION_CONTEXT}, {"text": TYPED}]}],
        "systemInstruction": {"role": "user", "parts": [{"text": "You are an interactive CLI agent..."}]},
        "tools": [{"functionDeclarations": [{"name": "run_shell_command", "parameters": {"type": "object"}}]}],
        "generationConfig": {"temperature": 1, "thinkingConfig": {"includeThoughts": True}},
    }
    facts = gemini.parse_request(body(req))
    assert (facts.prompt, facts.correlating_tool_call_id, facts.error) == (TYPED, None, None)


# ----------------------------------------------------------------------------------------------------
# Copilot CLI: `<current_datetime>…</current_datetime>\n\n` in front of the typed text, in the same part

DATETIME = "<current_datetime>2026-12-01T10:15:42.118Z</current_datetime>\n\n"


@pytest.mark.parametrize("prompt_of", [responses_prompt, messages_prompt, chat_prompt],
                         ids=["responses", "messages", "chat"])
def test_copilot_cli_prompt_drops_its_datetime_prefix(prompt_of: Callable[..., str | None]) -> None:
    assert prompt_of(DATETIME + TYPED) == TYPED


def test_copilot_cli_datetime_alone_is_no_prompt() -> None:
    assert responses_prompt(DATETIME) is None


def test_copilot_cli_typed_text_keeps_its_own_lines() -> None:
    typed = "first line\n\n  indented second line\n"
    assert responses_prompt(DATETIME + typed) == typed


# ----------------------------------------------------------------------------------------------------
# Claude Code: <system-reminder> blocks first, the typed prompt last

REMINDER = ("<system-reminder>\nAs you answer the user's questions, you can use the following context:\n"
            "# claudeMd\nCodebase and user instructions are shown below.\n</system-reminder>")
REMINDER_2 = "<system-reminder>\nToday's date is 2026-12-01.\n</system-reminder>\n"


def test_claude_code_prompt_is_the_last_block_after_its_reminders() -> None:
    assert messages_prompt(REMINDER, REMINDER_2, TYPED) == TYPED


def test_claude_code_reminder_in_the_same_block_as_the_typed_text() -> None:
    assert messages_prompt(REMINDER + "\n\n" + TYPED) == TYPED
    assert messages_prompt(TYPED + "\n\n" + REMINDER) == TYPED


# ----------------------------------------------------------------------------------------------------
# Codex: an AGENTS.md message and an <environment_context> message, then the typed prompt as the last user message

AGENTS_MD = ("# AGENTS.md instructions for /work/repo\n\n<INSTRUCTIONS>\nRun the tests before committing.\n"
             "</INSTRUCTIONS>")
ENVIRONMENT = ("<environment_context>\n  <cwd>/work/repo</cwd>\n  <approval_policy>never</approval_policy>\n"
               "  <shell>bash</shell>\n</environment_context>")


def test_codex_prompt_is_the_last_user_message_after_its_context_messages() -> None:
    req = {"model": "gpt-5.1-codex", "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": AGENTS_MD}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": ENVIRONMENT}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": TYPED}]},
        {"type": "configuration_update", "model": "gpt-5.1-codex"},
    ]}
    assert openai_responses.parse_request(body(req)).prompt == TYPED


def test_codex_context_message_is_no_prompt() -> None:
    assert responses_prompt(AGENTS_MD) is None
    assert responses_prompt(ENVIRONMENT) is None


# ----------------------------------------------------------------------------------------------------
# OpenCode: the prompt as typed, quotes and tags included


@pytest.mark.parametrize("typed", ['"quoted as typed"', "what does <session_context> mean in Gemini CLI?",
                                   "compare <b>bold</b> and <i>italic</i>"])
def test_text_that_only_mentions_a_tag_is_kept_as_typed(typed: str) -> None:
    for prompt_of in (responses_prompt, messages_prompt, chat_prompt, gemini_prompt):
        assert prompt_of(typed) == typed


# ----------------------------------------------------------------------------------------------------
# The rules themselves


@pytest.mark.parametrize(
    ("text", "typed"),
    [
        (TYPED, TYPED),
        ("  spaced as typed  ", "  spaced as typed  "),  # nothing injected: the text exactly as sent
        ("", None),
        ("   \n", None),
        (None, None),
        (42, None),
        (REMINDER, None),
        (REMINDER + REMINDER_2 + "  ", None),
        (DATETIME + REMINDER + TYPED, TYPED),
        ('<system-reminder kind="ide">x</system-reminder>' + TYPED, TYPED),  # attributes on the tag
        ("<system-reminder>never closed " + TYPED, "<system-reminder>never closed " + TYPED),
        ("<environment_context>a</environment_context>x<environment_context>b</environment_context>", "x"),
        ("<session_context>a</session_context>", None),
        ("<current_datetime>t</current_datetime>", None),
        ("<SYSTEM-REMINDER>x</SYSTEM-REMINDER>", "<SYSTEM-REMINDER>x</SYSTEM-REMINDER>"),  # tags match exactly
    ],
)
def test_typed_text(text: object, typed: str | None) -> None:
    assert typed_text(text) == typed


def test_typed_prompt_picks_per_agent_layout() -> None:
    parts = [SESSION_CONTEXT, "first typed", "appended file"]
    assert typed_prompt(parts, "first") == "first typed"
    assert typed_prompt(parts, "last") == "appended file"
    assert typed_prompt(parts, "all") == "first typed\nappended file"
    assert typed_prompt([REMINDER, None, 7, ""], "last") is None
    assert typed_prompt([], "all") is None


def test_every_agent_wrapper_is_known_in_one_place() -> None:
    """The tags of each agent's injected context, and nothing hidden elsewhere: every tag is context."""
    assert {w.agent for w in prompt_context.AGENTS} <= set(CLIENTS)  # named as the recorded client names
    tags = {tag for wrappers in prompt_context.AGENTS for tag in wrappers.tags}
    assert {"system-reminder", "environment_context", "session_context", "current_datetime"} <= tags
    for tag in tags:
        assert typed_text(f"<{tag}>\ninjected\n</{tag}>\n\n{TYPED}") == TYPED


TOKENS = ["<", ">", "/", " ", "\n", "a", "typed", "system-reminder", "current_datetime", "session_context", "=\"x\""]
PART = st.one_of(st.lists(st.sampled_from(TOKENS), max_size=30).map("".join), st.none(), st.integers())


@settings(max_examples=300, deadline=None)
@given(st.lists(PART, max_size=4), st.sampled_from(["first", "last", "all"]))
def test_any_parts_give_typed_text_from_the_input_or_none(parts: list, pick: str) -> None:
    prompt = typed_prompt(parts, pick)  # type: ignore[arg-type]
    assert prompt is None or (prompt.strip() and all(line in "\n".join(p for p in parts if isinstance(p, str))
                                                     for line in prompt.split("\n")))


def test_many_unclosed_or_unmatched_tags_are_kept_as_typed() -> None:
    """Untrusted text full of tag fragments: kept as it is, read in one pass each way."""
    for text in ("<system-reminder " * 20_000, "x</system-reminder>" * 20_000, "<current_datetime>" * 20_000 + "q"):
        assert typed_text(text) == text
